"""Example lmrl plug-in: a task (`guess_number`) and an algorithm (`awbc`), found through entry points once installed.

Modules are imported only when lmrl asks for their entry point, so this file imports nothing.
"""
