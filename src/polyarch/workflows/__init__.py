"""The user's workflows, one module each; the CLI calls these and renders what they return."""
