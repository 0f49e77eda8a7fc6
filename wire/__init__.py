"""Corral's wire types: ids, resources, topology, specs, events, commands, NATS subjects and codecs.

Frozen, tagged msgspec Structs shared by every other package. ``wire`` imports nothing of the project.
"""
