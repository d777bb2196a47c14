"""Modes: one thin Job builder per `config.mode`, run by launch.py; no mode imports another."""
