// The chat page: conversations streamed through POST /v1/messages, kept in the browser.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, errorFromBody, errorText, type ModelEntry, request, sseEvents } from "./api";
import { renderMarkdown } from "./markdown";
import {
  type Block,
  type ChatSettings,
  type Conversation,
  loadConversations,
  type Message,
  newConversation,
  newId,
  saveConversations,
  type Stats,
  textOf,
  titleFrom,
  type ToolUseBlock,
} from "./store";

interface Props {
  models: ModelEntry[];
  onModelsChanged: () => void;
}

interface Running {
  convId: string;
  abort: AbortController;
}

const ACTIVE_STORAGE = "lmdock.activeConversation";

export function ChatPage({ models, onModelsChanged }: Props) {
  // There is always a conversation to type into and to set up (an empty one is reused, not stacked).
  const convs = useRef<Conversation[]>(null as unknown as Conversation[]);
  if (!convs.current) {
    convs.current = loadConversations();
    if (!convs.current.length) convs.current.push(newConversation());
  }
  const [activeId, setActiveId] = useState<string>(() => {
    const saved = localStorage.getItem(ACTIVE_STORAGE);
    return convs.current.find((c) => c.id === saved)?.id ?? convs.current[0]?.id ?? "";
  });
  const [, setVersion] = useState(0);
  const [running, setRunning] = useState<Running | null>(null);
  const [draft, setDraft] = useState("");
  const [editing, setEditing] = useState<{ id: string; text: string } | null>(null);
  const [showSettings, setShowSettings] = useState(false);
  const [storageError, setStorageError] = useState<string | null>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const composer = useRef<HTMLTextAreaElement>(null);
  const frame = useRef(0);
  const lastSave = useRef(0);

  const chatModels = useMemo(() => models.filter((m) => m.type !== "embedding"), [models]);
  const preferredModel = (chatModels.find((m) => m.state === "loaded") ?? chatModels[0])?.key ?? "";
  const active = convs.current.find((c) => c.id === activeId);

  const rerender = () => setVersion((v) => v + 1);
  const persist = (force = true) => {
    const now = Date.now();
    if (!force && now - lastSave.current < 1000) return;
    lastSave.current = now;
    setStorageError(saveConversations(convs.current));
  };
  /** Re-render at most once per animation frame while tokens stream in. */
  const rerenderSoon = () => {
    if (frame.current) return;
    frame.current = requestAnimationFrame(() => {
      frame.current = 0;
      rerender();
    });
  };

  useEffect(() => {
    if (activeId) localStorage.setItem(ACTIVE_STORAGE, activeId);
  }, [activeId]);

  // A conversation without a model (a new one, or its model was deleted) takes the loaded model.
  useEffect(() => {
    if (active && preferredModel && !chatModels.some((m) => m.key === active.settings.model)) {
      active.settings.model = preferredModel;
      persist();
      rerender();
    }
  }, [active?.id, preferredModel, chatModels]);

  // Keep the newest text in view while streaming, unless the user scrolled up to read.
  useEffect(() => {
    const el = scroller.current;
    if (el && el.scrollHeight - el.scrollTop - el.clientHeight < 160) el.scrollTop = el.scrollHeight;
  });

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape" && running) {
        e.preventDefault();
        running.abort.abort();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [running]);

  function startConversation(): Conversation {
    if (active && !active.messages.length) return active;
    const conv = newConversation(preferredModel);
    if (active) conv.settings = { ...active.settings, model: active.settings.model || preferredModel };
    convs.current.unshift(conv);
    setActiveId(conv.id);
    persist();
    return conv;
  }

  function deleteConversation(id: string) {
    if (running?.convId === id) running.abort.abort();
    convs.current = convs.current.filter((c) => c.id !== id);
    if (!convs.current.length) convs.current.push(newConversation(preferredModel));
    if (id === activeId) setActiveId(convs.current[0].id);
    persist();
    rerender();
  }

  function pendingToolUses(conv: Conversation): ToolUseBlock[] {
    const last = conv.messages[conv.messages.length - 1];
    if (!last || last.role !== "assistant") return [];
    return last.content.filter((b): b is ToolUseBlock => b.type === "tool_use");
  }

  function userContent(conv: Conversation, text: string): Block[] {
    const calls = pendingToolUses(conv);
    if (calls.length) return calls.map((c) => ({ type: "tool_result", tool_use_id: c.id, content: text }));
    return [{ type: "text", text }];
  }

  function send() {
    const text = draft.trim();
    if (!text || running) return;
    const conv = active ?? startConversation();
    conv.messages.push({ id: newId("msg"), role: "user", content: userContent(conv, text) });
    if (conv.title === "New chat") conv.title = titleFrom(text);
    setDraft("");
    void generate(conv);
  }

  function regenerate(conv: Conversation) {
    if (running) return;
    while (conv.messages.length && conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
    if (conv.messages.length) void generate(conv);
  }

  function saveEdit(conv: Conversation, index: number) {
    if (!editing || running) return;
    const msg = conv.messages[index];
    msg.content = msg.content.map((b): Block => {
      if (b.type === "text") return { ...b, text: editing.text };
      if (b.type === "tool_result") return { ...b, content: editing.text };
      return b;
    });
    if (!msg.content.length) msg.content = [{ type: "text", text: editing.text }];
    conv.messages = conv.messages.slice(0, index + 1);
    setEditing(null);
    void generate(conv);
  }

  async function generate(conv: Conversation) {
    const body = requestBody(conv);
    const reply: Message = { id: newId("msg"), role: "assistant", content: [] };
    conv.messages.push(reply);
    conv.updated = Date.now();
    convs.current = [conv, ...convs.current.filter((c) => c.id !== conv.id)];
    persist();
    rerender();
    if (typeof body === "string") {
      reply.error = body;
      persist();
      rerender();
      return;
    }
    const abort = new AbortController();
    setRunning({ convId: conv.id, abort });
    const stats: Stats = { model: body.model as string };
    reply.stats = stats;
    const started = performance.now();
    let firstAt = 0;
    try {
      const res = await request("/v1/messages", { body, signal: abort.signal });
      for await (const ev of sseEvents(res)) {
        const data = JSON.parse(ev.data);
        if (data.type === "error" || ev.event === "error") throw errorFromBody(0, ev.data);
        if (data.type === "message_start") {
          const usage = data.message?.usage ?? {};
          stats.model = data.message?.model ?? stats.model;
          stats.input_tokens = usage.input_tokens;
          stats.cache_read_input_tokens = usage.cache_read_input_tokens ?? 0;
        } else if (data.type === "content_block_start") {
          const block = { ...data.content_block };
          if (block.type === "tool_use") block.partial_json = "";
          reply.content[data.index] = block;
        } else if (data.type === "content_block_delta") {
          if (!firstAt) firstAt = performance.now();
          applyDelta(reply.content[data.index], data.delta);
        } else if (data.type === "content_block_stop") {
          const block = reply.content[data.index];
          if (block?.type === "tool_use" && block.partial_json !== undefined) {
            if (block.partial_json) block.input = parseJson(block.partial_json);
            delete block.partial_json;
          }
        } else if (data.type === "message_delta") {
          stats.stop_reason = data.delta?.stop_reason ?? null;
          const usage = data.usage ?? {};
          if (usage.output_tokens !== undefined) stats.output_tokens = usage.output_tokens;
          if (usage.input_tokens != null) stats.input_tokens = usage.input_tokens;
          if (usage.cache_read_input_tokens != null) stats.cache_read_input_tokens = usage.cache_read_input_tokens;
        }
        rerenderSoon();
        persist(false);
      }
    } catch (exc) {
      if (abort.signal.aborted) reply.stopped = true;
      else reply.error = errorText(exc);
      if (exc instanceof ApiError && exc.status === 404) onModelsChanged();
    } finally {
      const ended = performance.now();
      stats.total_ms = ended - started;
      if (firstAt) stats.ttft_ms = firstAt - started;
      const n = stats.output_tokens ?? 0;
      if (firstAt && n > 1 && ended > firstAt) stats.tokens_per_second = (n - 1) / ((ended - firstAt) / 1000);
      reply.content = reply.content.filter(Boolean);
      for (const block of reply.content) if (block.type === "tool_use") delete block.partial_json;
      conv.updated = Date.now();
      setRunning(null);
      persist();
      rerender();
      onModelsChanged(); // a just-in-time load changes a model's state
      composer.current?.focus();
    }
  }

  const isRunning = (conv?: Conversation) => !!conv && running?.convId === conv.id;
  const pending = active ? pendingToolUses(active) : [];

  return (
    <div class="chat">
      <nav class="conversations" aria-label="Conversations">
        <button type="button" class="primary wide" onClick={() => { startConversation(); composer.current?.focus(); }}>
          + New chat
        </button>
        <ul>
          {convs.current.map((c) => (
            <li key={c.id} class={c.id === activeId ? "active" : ""}>
              <button type="button" class="conv-title" aria-current={c.id === activeId ? "page" : undefined} onClick={() => setActiveId(c.id)}>
                {c.title}
              </button>
              <button type="button" class="icon" aria-label={`Delete conversation ${c.title}`} title="Delete" onClick={() => deleteConversation(c.id)}>
                ×
              </button>
            </li>
          ))}
        </ul>
      </nav>

      <section class="conversation" aria-label="Conversation">
        <header class="chat-header">
          <label>
            Model{" "}
            <select
              aria-label="Model"
              value={active?.settings.model ?? preferredModel}
              onChange={(e) => {
                const conv = active ?? startConversation();
                conv.settings.model = (e.target as HTMLSelectElement).value;
                persist();
                rerender();
              }}
            >
              {chatModels.map((m) => (
                <option key={m.key} value={m.key}>
                  {m.key} {m.state === "loaded" ? "(loaded)" : m.state === "loading" ? "(loading)" : ""}
                </option>
              ))}
            </select>
          </label>
          <button type="button" aria-expanded={showSettings} aria-controls="chat-settings" onClick={() => setShowSettings(!showSettings)}>
            Settings
          </button>
        </header>

        <div class="messages" ref={scroller}>
          {!active?.messages.length && (
            <p class="empty">Send a message to start. Enter sends, Shift+Enter adds a line, Esc stops a reply.</p>
          )}
          {active?.messages.map((m, i) => (
            <MessageView
              key={m.id}
              message={m}
              streaming={isRunning(active) && i === active.messages.length - 1}
              editing={editing?.id === m.id ? editing.text : null}
              canRegenerate={!running && m.role === "assistant" && i === active.messages.length - 1}
              canEdit={!running && m.role === "user"}
              onEdit={() => setEditing({ id: m.id, text: textOf(m) })}
              onEditText={(text) => setEditing({ id: m.id, text })}
              onEditSave={() => saveEdit(active, i)}
              onEditCancel={() => setEditing(null)}
              onRegenerate={() => regenerate(active)}
            />
          ))}
        </div>

        {storageError && <p class="error" role="alert">{storageError}</p>}
        <form
          class="composer"
          onSubmit={(e) => {
            e.preventDefault();
            send();
          }}
        >
          <textarea
            ref={composer}
            aria-label={pending.length ? `Result for tool ${pending.map((p) => p.name).join(", ")}` : "Message"}
            placeholder={pending.length ? `Result of ${pending.map((p) => p.name).join(", ")} (sent as tool_result)` : "Message (Enter sends, Shift+Enter for a new line)"}
            value={draft}
            rows={3}
            onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
                e.preventDefault();
                send();
              }
            }}
          />
          {isRunning(active) ? (
            <button type="button" class="danger" onClick={() => running?.abort.abort()}>
              Stop
            </button>
          ) : (
            <button type="submit" class="primary" disabled={!draft.trim() || !!running}>
              Send
            </button>
          )}
        </form>
      </section>

      {showSettings && (
        <SettingsPanel
          settings={active?.settings ?? null}
          onChange={(patch) => {
            const conv = active ?? startConversation();
            Object.assign(conv.settings, patch);
            persist();
            rerender();
          }}
          onClose={() => setShowSettings(false)}
        />
      )}
    </div>
  );
}

function applyDelta(block: Block | undefined, delta: Record<string, string>) {
  if (!block) return;
  if (delta.type === "text_delta" && block.type === "text") block.text += delta.text;
  else if (delta.type === "thinking_delta" && block.type === "thinking") block.thinking += delta.thinking;
  else if (delta.type === "signature_delta" && block.type === "thinking") block.signature = delta.signature;
  else if (delta.type === "input_json_delta" && block.type === "tool_use") block.partial_json = (block.partial_json ?? "") + delta.partial_json;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { _unparsed: text };
  }
}

/** The Messages API request for a conversation, or a message saying why the settings are invalid. */
function requestBody(conv: Conversation): Record<string, unknown> | string {
  const s = conv.settings;
  if (!s.model) return "No model: download one on the Models page.";
  const body: Record<string, unknown> = {
    model: s.model,
    max_tokens: Number(s.max_tokens) || 1024,
    stream: true,
    messages: wireMessages(conv.messages),
  };
  if (s.system.trim()) body.system = s.system;
  for (const [name, value, integer] of [
    ["temperature", s.temperature, false],
    ["top_p", s.top_p, false],
    ["top_k", s.top_k, true],
  ] as const) {
    if (value.trim() === "") continue;
    const n = Number(value);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) return `Settings: ${name} must be a number.`;
    body[name] = n;
  }
  if (s.thinking) body.thinking = { type: "enabled", budget_tokens: Number(s.thinking_budget) || 1024 };
  if (s.tools.trim()) {
    try {
      const tools = JSON.parse(s.tools);
      if (!Array.isArray(tools)) return "Settings: tools must be a JSON array of tool definitions.";
      body.tools = tools;
      if (s.tool_choice !== "auto") body.tool_choice = { type: s.tool_choice };
    } catch (exc) {
      return `Settings: tools is not valid JSON (${errorText(exc)}).`;
    }
  }
  return body;
}

/** The conversation as Messages API turns: unsigned (interrupted) thinking and empty blocks left out. */
function wireMessages(messages: Message[]) {
  const out: { role: string; content: unknown[] }[] = [];
  for (const m of messages) {
    const content = m.content.flatMap((b): unknown[] => {
      if (b.type === "text") return b.text ? [{ type: "text", text: b.text }] : [];
      if (b.type === "thinking") return b.signature ? [{ type: "thinking", thinking: b.thinking, signature: b.signature }] : [];
      if (b.type === "tool_use") return [{ type: "tool_use", id: b.id, name: b.name, input: b.input ?? {} }];
      return [{ type: "tool_result", tool_use_id: b.tool_use_id, content: b.content }];
    });
    if (content.length) out.push({ role: m.role, content });
  }
  // The assistant's reply being generated is not part of the request.
  return out;
}

interface MessageProps {
  message: Message;
  streaming: boolean;
  editing: string | null;
  canRegenerate: boolean;
  canEdit: boolean;
  onEdit: () => void;
  onEditText: (text: string) => void;
  onEditSave: () => void;
  onEditCancel: () => void;
  onRegenerate: () => void;
}

function MessageView(p: MessageProps) {
  const m = p.message;
  const editBox = useRef<HTMLTextAreaElement>(null);
  const isEditing = p.editing !== null;
  useEffect(() => {
    if (isEditing) editBox.current?.focus();
  }, [isEditing]);
  return (
    <article class={`message ${m.role}`} data-role={m.role} aria-label={m.role === "user" ? "You" : "Assistant"}>
      <div class="who">{m.role === "user" ? "You" : (m.stats?.model ?? "Assistant")}</div>
      {p.editing !== null ? (
        <form
          class="edit"
          onSubmit={(e) => {
            e.preventDefault();
            p.onEditSave();
          }}
        >
          <textarea
            aria-label="Edit message"
            value={p.editing}
            rows={4}
            ref={editBox}
            onInput={(e) => p.onEditText((e.target as HTMLTextAreaElement).value)}
            onKeyDown={(e) => {
              if (e.key === "Escape") p.onEditCancel();
              if (e.key === "Enter" && !e.shiftKey) {
                e.preventDefault();
                p.onEditSave();
              }
            }}
          />
          <div class="actions">
            <button type="submit" class="primary">Save and resend</button>
            <button type="button" onClick={p.onEditCancel}>Cancel</button>
          </div>
        </form>
      ) : (
        <div class="blocks">
          {m.content.map((b, i) => <BlockView key={i} block={b} streaming={p.streaming && i === m.content.length - 1} />)}
          {p.streaming && !m.content.length && <p class="waiting">Waiting for the model…</p>}
        </div>
      )}
      {m.error && (
        <p class="error" role="alert">
          {m.error}
        </p>
      )}
      {m.role === "assistant" && !p.streaming && <UsageLine stats={m.stats} stopped={m.stopped} />}
      {p.editing === null && (
        <div class="actions">
          {p.canEdit && (
            <button type="button" class="small" onClick={p.onEdit}>
              Edit
            </button>
          )}
          {p.canRegenerate && (
            <button type="button" class="small" onClick={p.onRegenerate}>
              Regenerate
            </button>
          )}
          {m.role === "assistant" && !p.streaming && textOf(m) && <CopyButton text={textOf(m)} label="Copy" />}
        </div>
      )}
    </article>
  );
}

function BlockView({ block, streaming }: { block: Block; streaming: boolean }) {
  if (block.type === "text") {
    return <div class="markdown" dangerouslySetInnerHTML={{ __html: renderMarkdown(block.text) }} />;
  }
  if (block.type === "thinking") {
    return (
      <details class="thinking">
        <summary>{streaming ? "Thinking…" : `Thinking (${block.thinking.length} characters)`}</summary>
        <div class="thinking-text">{block.thinking}</div>
      </details>
    );
  }
  if (block.type === "tool_use") {
    const json = block.partial_json !== undefined ? block.partial_json : JSON.stringify(block.input ?? {}, null, 2);
    return (
      <div class="tool-call">
        <div>
          Tool call <strong>{block.name}</strong> <code>{block.id}</code>
        </div>
        <pre>
          <code>{json}</code>
        </pre>
      </div>
    );
  }
  return (
    <div class="tool-result">
      <div>
        Tool result for <code>{block.tool_use_id}</code>
      </div>
      <pre>
        <code>{block.content}</code>
      </pre>
    </div>
  );
}

function UsageLine({ stats, stopped }: { stats?: Stats; stopped?: boolean }) {
  if (!stats) return null;
  const parts: string[] = [];
  if (stopped) parts.push("stopped");
  if (stats.input_tokens !== undefined) {
    const cached = stats.cache_read_input_tokens ?? 0;
    parts.push(`prompt ${stats.input_tokens + cached} tokens (${cached} cached)`);
  }
  if (stats.output_tokens !== undefined) parts.push(`${stats.output_tokens} output tokens`);
  if (stats.tokens_per_second !== undefined) parts.push(`${stats.tokens_per_second.toFixed(1)} tokens/s`);
  if (stats.ttft_ms !== undefined) parts.push(`first token ${(stats.ttft_ms / 1000).toFixed(2)} s`);
  if (stats.stop_reason) parts.push(stats.stop_reason);
  if (!parts.length) return null;
  return (
    <p class="usage" data-testid="usage">
      {parts.join(" · ")}
    </p>
  );
}

export function CopyButton({ text, label }: { text: string; label: string }) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      class="small"
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(text);
        } catch {
          const area = document.createElement("textarea");
          area.value = text;
          document.body.appendChild(area);
          area.select();
          document.execCommand("copy");
          area.remove();
        }
        setDone(true);
        setTimeout(() => setDone(false), 1500);
      }}
    >
      {done ? "Copied" : label}
    </button>
  );
}

interface SettingsProps {
  settings: ChatSettings | null;
  onChange: (patch: Partial<ChatSettings>) => void;
  onClose: () => void;
}

function SettingsPanel({ settings, onChange, onClose }: SettingsProps) {
  const s = settings;
  const text = (name: keyof ChatSettings) => (e: Event) => onChange({ [name]: (e.target as HTMLInputElement).value } as Partial<ChatSettings>);
  return (
    <aside id="chat-settings" class="settings" aria-label="Conversation settings">
      <header>
        <h2>Conversation settings</h2>
        <button type="button" class="icon" aria-label="Close settings" onClick={onClose}>
          ×
        </button>
      </header>
      {!s ? (
        <p>Start a conversation to set its system prompt and sampling.</p>
      ) : (
        <>
          <label>
            System prompt
            <textarea rows={5} value={s.system} onInput={text("system")} />
          </label>
          <div class="grid2">
            <label>
              Max tokens
              <input type="number" min={1} value={s.max_tokens} onInput={(e) => onChange({ max_tokens: Number((e.target as HTMLInputElement).value) })} />
            </label>
            <label>
              Temperature
              <input inputMode="decimal" placeholder="default" value={s.temperature} onInput={text("temperature")} />
            </label>
            <label>
              Top p
              <input inputMode="decimal" placeholder="default" value={s.top_p} onInput={text("top_p")} />
            </label>
            <label>
              Top k
              <input inputMode="numeric" placeholder="default" value={s.top_k} onInput={text("top_k")} />
            </label>
          </div>
          <label class="check">
            <input type="checkbox" checked={s.thinking} onChange={(e) => onChange({ thinking: (e.target as HTMLInputElement).checked })} />
            Extended thinking (reasoning models)
          </label>
          {s.thinking && (
            <label>
              Thinking budget (tokens)
              <input type="number" min={1024} value={s.thinking_budget} onInput={(e) => onChange({ thinking_budget: Number((e.target as HTMLInputElement).value) })} />
            </label>
          )}
          <label>
            Tools (JSON array of Anthropic tool definitions)
            <textarea
              rows={6}
              spellcheck={false}
              class="mono"
              placeholder='[{"name": "get_weather", "description": "…", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]'
              value={s.tools}
              onInput={text("tools")}
            />
          </label>
          <label>
            Tool choice
            <select value={s.tool_choice} onChange={(e) => onChange({ tool_choice: (e.target as HTMLSelectElement).value as ChatSettings["tool_choice"] })}>
              <option value="auto">auto: the model decides</option>
              <option value="any">any: must call a tool</option>
              <option value="none">none: no tool calls</option>
            </select>
          </label>
        </>
      )}
    </aside>
  );
}
