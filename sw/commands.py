"""Subcommands on models and images: export, inspect, generate."""


def register(sub):
    pass
