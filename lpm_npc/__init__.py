"""lpm-npc: a real-time performance server for game NPC faces."""

__version__ = "0.1.0"
