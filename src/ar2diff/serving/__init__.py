"""ar2diff serve: an OpenAI-compatible server over one model, with a step viewer."""
