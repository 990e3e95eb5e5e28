"""The run store: the only code that knows OUTPUT's shape (paths, records, stamps, prediction files, prep bindings). Imports only the foundation."""
