"""The `lsp` command line: train, play and list games and algorithms."""
