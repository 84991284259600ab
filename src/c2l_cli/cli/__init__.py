"""The command-line interface: a thin layer that parses, calls the core and renders."""
