"""Tool definitions shaped like Claude Code's (zod-generated JSON Schemas, `$schema`, no extra keys)."""

from lmdock.core.request import Tool

_DRAFT = "http://json-schema.org/draft-07/schema#"


def _obj(properties: dict, required: list[str]) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "$schema": _DRAFT,
    }


WRITE = Tool(
    "Write",
    "Writes a file to the local filesystem.",
    _obj(
        {
            "file_path": {"type": "string", "description": "The absolute path to the file to write"},
            "content": {"type": "string", "description": "The content to write to the file"},
        },
        ["file_path", "content"],
    ),
)

CLAUDE_CODE_TOOLS = [
    Tool(
        "Bash",
        "Executes a given bash command.",
        _obj(
            {
                "command": {"type": "string", "description": "The command to execute"},
                "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
                "description": {"type": "string"},
                "run_in_background": {"type": "boolean"},
            },
            ["command"],
        ),
    ),
    Tool(
        "Read",
        "Reads a file.",
        _obj(
            {"file_path": {"type": "string"}, "offset": {"type": "number"}, "limit": {"type": "number"}},
            ["file_path"],
        ),
    ),
    WRITE,
    Tool(
        "Edit",
        "Performs exact string replacements in files.",
        _obj(
            {
                "file_path": {"type": "string"},
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean", "default": False},
            },
            ["file_path", "old_string", "new_string"],
        ),
    ),
    Tool(
        "Glob",
        "Fast file pattern matching.",
        _obj({"pattern": {"type": "string"}, "path": {"type": "string"}}, ["pattern"]),
    ),
    Tool(
        "Grep",
        "A powerful search tool built on ripgrep.",
        _obj(
            {
                "pattern": {"type": "string"},
                "path": {"type": "string"},
                "glob": {"type": "string"},
                "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
                "-B": {"type": "number"},
                "-A": {"type": "number"},
                "-i": {"type": "boolean"},
                "head_limit": {"type": "number"},
                "multiline": {"type": "boolean"},
            },
            ["pattern"],
        ),
    ),
    Tool(
        "TodoWrite",
        "Create and manage a structured task list.",
        _obj(
            {
                "todos": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "content": {"type": "string", "minLength": 1},
                            "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                            "activeForm": {"type": "string", "minLength": 1},
                        },
                        "required": ["content", "status", "activeForm"],
                        "additionalProperties": False,
                    },
                    "description": "The updated todo list",
                }
            },
            ["todos"],
        ),
    ),
    Tool(
        "WebFetch",
        "Fetches content from a URL.",
        _obj({"url": {"type": "string", "format": "uri"}, "prompt": {"type": "string"}}, ["url", "prompt"]),
    ),
    Tool(
        "mcp__odd__tool",
        "An MCP tool whose schema uses features llguidance rejects.",
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^(?!tmp)[a-z]+$"},
                "ref": {"type": "string", "format": "uri-reference"},
                "n": {"type": "integer"},
            },
            "required": ["n"],
            "$defs": {"unused": {"type": "string"}},
        },
    ),
]
