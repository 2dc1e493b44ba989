// Conversations live in the browser (localStorage): the server keeps no chat history of its own, so the
// page needs no private endpoint (design §7), they survive reloads and server restarts, and they stay
// with the person whose browser it is.

export interface TextBlock {
  type: "text";
  text: string;
}
export interface ThinkingBlock {
  type: "thinking";
  thinking: string;
  signature?: string;
}
export interface ToolUseBlock {
  type: "tool_use";
  id: string;
  name: string;
  input: unknown;
  partial_json?: string;
}
export interface ToolResultBlock {
  type: "tool_result";
  tool_use_id: string;
  content: string;
}
export type Block = TextBlock | ThinkingBlock | ToolUseBlock | ToolResultBlock;

export interface Stats {
  model?: string;
  input_tokens?: number;
  cache_read_input_tokens?: number;
  output_tokens?: number;
  stop_reason?: string | null;
  ttft_ms?: number;
  total_ms?: number;
  tokens_per_second?: number;
}

export interface Message {
  id: string;
  role: "user" | "assistant";
  content: Block[];
  stats?: Stats;
  error?: string;
  stopped?: boolean;
}

export interface ChatSettings {
  model: string;
  system: string;
  max_tokens: number;
  temperature: string; // "" = the server's default
  top_p: string;
  top_k: string;
  thinking: boolean;
  thinking_budget: number;
  tools: string; // a JSON array of Anthropic tool definitions, or ""
  tool_choice: "auto" | "any" | "none";
}

export interface Conversation {
  id: string;
  title: string;
  created: number;
  updated: number;
  settings: ChatSettings;
  messages: Message[];
}

const STORAGE = "lmdock.conversations.v1";

export function newId(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

export function defaultSettings(model = ""): ChatSettings {
  return {
    model,
    system: "",
    max_tokens: 1024,
    temperature: "",
    top_p: "",
    top_k: "",
    thinking: false,
    thinking_budget: 1024,
    tools: "",
    tool_choice: "auto",
  };
}

export function newConversation(model = ""): Conversation {
  const now = Date.now();
  return { id: newId("conv"), title: "New chat", created: now, updated: now, settings: defaultSettings(model), messages: [] };
}

export function loadConversations(): Conversation[] {
  try {
    const raw = localStorage.getItem(STORAGE);
    const list = raw ? (JSON.parse(raw) as Conversation[]) : [];
    return Array.isArray(list) ? list.map((c) => ({ ...c, settings: { ...defaultSettings(), ...c.settings } })) : [];
  } catch {
    return [];
  }
}

/** Saves every conversation; returns an error message when the browser's storage is full. */
export function saveConversations(list: Conversation[]): string | null {
  try {
    localStorage.setItem(STORAGE, JSON.stringify(list));
    return null;
  } catch {
    return "The browser's storage is full: delete some conversations to keep new messages after a reload.";
  }
}

export function textOf(message: Message): string {
  return message.content
    .map((b) => (b.type === "text" ? b.text : b.type === "tool_result" ? b.content : ""))
    .join("\n");
}

export function titleFrom(text: string): string {
  const line = text.trim().split("\n")[0] ?? "";
  return line.length > 60 ? `${line.slice(0, 57)}…` : line || "New chat";
}
