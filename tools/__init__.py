"""The typed tools. Each module registers its tools with `tools.registry.tool`. Never imports `assistant`."""

from tools.registry import ToolInput, ToolResult, all_tools, call_tool, get_tool, tool

__all__ = ["ToolInput", "ToolResult", "all_tools", "call_tool", "get_tool", "tool"]
