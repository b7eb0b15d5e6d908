"""Thin click shells over the library: parse, validate, configure logging, call one function, map errors."""
