"""`nixie`: one module per verb group; `main` builds the parser."""
