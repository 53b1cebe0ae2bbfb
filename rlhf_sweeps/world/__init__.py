"""The embedded synthetic world: a hidden language, its tokenizer and a gold reward."""
