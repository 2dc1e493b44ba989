// The server page: /metrics (polled, with live charts of the last minutes), the live request log (GET /api/v1/logs/stream, SSE) and snippets
// that point Claude Code and the SDKs at this server.
import { useEffect, useRef, useState } from "preact/hooks";
import { apiKey, errorText, type ModelEntry, request, sseEvents } from "./api";
import { CopyButton } from "./chat";
import { appendSample, emptyHistory, type History, LiveChart } from "./charts";

interface Props {
  models: ModelEntry[];
}

export function ServerPage({ models }: Props) {
  return (
    <div class="page server-page">
      <Metrics />
      <Snippets models={models} />
      <RequestLog />
    </div>
  );
}

type Samples = Record<string, Record<string, number>>; // model -> metric -> value

/** Prometheus text format -> per-model values (counters lose their `_total` suffix). */
export function parseMetrics(text: string): Samples {
  const out: Samples = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const model = /model="((?:[^"\\]|\\.)*)"/.exec(m[2] ?? "")?.[1];
    if (!model || m[1].endsWith("_created")) continue;
    const name = m[1].replace(/^lmdock_/, "").replace(/_total$/, "");
    (out[model] ??= {})[name] = Number(m[3]);
  }
  return out;
}

/** What changed between two polls of one model: generated tokens per second, and the share of the
 * prompt tokens that arrived in between which came from the prefix cache (null: none arrived). */
export function intervalRates(before: Record<string, number>, after: Record<string, number>, seconds: number) {
  const delta = (name: string) => Math.max(0, (after[name] ?? 0) - (before[name] ?? 0));
  const prompts = delta("prompt_tokens");
  return {
    tokensPerSecond: seconds > 0 ? delta("generated_tokens") / seconds : 0,
    hitRate: prompts > 0 ? Math.min(100, (100 * delta("cache_hit_tokens")) / prompts) : null,
  };
}

function Metrics() {
  const [samples, setSamples] = useState<Samples>({});
  const [histories, setHistories] = useState<Record<string, History>>({});
  const [error, setError] = useState<string | null>(null);
  const previous = useRef<{ at: number; samples: Samples } | null>(null);

  useEffect(() => {
    let stopped = false;
    const poll = async () => {
      try {
        const text = await (await request("/metrics")).text();
        const now = performance.now();
        const next = parseMetrics(text);
        const prev = previous.current;
        previous.current = { at: now, samples: next };
        if (stopped) return;
        if (prev) {
          const seconds = (now - prev.at) / 1000;
          const t = Date.now() / 1000;
          setHistories((all) => {
            const out: Record<string, History> = {};
            for (const [model, values] of Object.entries(next)) {
              const before = prev.samples[model];
              if (!before) continue;
              const rates = intervalRates(before, values, seconds);
              out[model] = appendSample(all[model] ?? emptyHistory(), t, { ...rates, queueDepth: values.queue_depth ?? 0 });
            }
            return out;
          });
        }
        setSamples(next);
        setError(null);
      } catch (exc) {
        if (!stopped) setError(errorText(exc));
      }
    };
    void poll();
    const timer = setInterval(poll, 2000);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, []);

  const entries = Object.entries(samples);
  return (
    <section aria-labelledby="metrics-title">
      <h2 id="metrics-title">Metrics</h2>
      {error && <p class="error" role="alert">{error}</p>}
      {!entries.length && !error && <p class="muted">No model is loaded: metrics appear once one is.</p>}
      {entries.map(([model, v]) => {
        const hitRate = v.prompt_tokens ? (100 * (v.cache_hit_tokens ?? 0)) / v.prompt_tokens : 0;
        const h = histories[model] ?? emptyHistory();
        return (
          <div class="metric-group" key={model} data-model={model}>
            <h3>{model}</h3>
            <div class="charts">
              <LiveChart name="tokens" label="generated tokens/s" unit="" t={h.t} values={h.tokensPerSecond} />
              <LiveChart name="queue" label="queue depth" unit="" t={h.t} values={h.queueDepth} />
              <LiveChart name="hits" label="cache hit rate" unit=" %" t={h.t} values={h.hitRate} max={100} />
            </div>
            <dl class="metrics">
              <Metric label="tokens/s (engine)" value={(v.tokens_per_second ?? 0).toFixed(1)} />
              <Metric label="queue depth" value={String(v.queue_depth ?? 0)} />
              <Metric label="active sequences" value={String(v.active_sequences ?? 0)} />
              <Metric label="cache hit rate (all)" value={`${hitRate.toFixed(1)} %`} />
              <Metric label="requests" value={String(v.requests ?? 0)} />
              <Metric label="generated tokens" value={String(v.generated_tokens ?? 0)} />
              <Metric label="prompt tokens" value={String(v.prompt_tokens ?? 0)} />
            </dl>
          </div>
        );
      })}
    </section>
  );
}

function Metric({ label, value }: { label: string; value: string }) {
  return (
    <div>
      <dt>{label}</dt>
      <dd>{value}</dd>
    </div>
  );
}

function Snippets({ models }: { models: ModelEntry[] }) {
  const chat = models.filter((m) => m.type !== "embedding");
  const [chosen, setChosen] = useState("");
  const model = chat.find((m) => m.key === chosen)?.key ?? (chat.find((m) => m.state === "loaded") ?? chat[0])?.key ?? "MODEL";
  const base = window.location.origin;
  const key = apiKey() || "lmdock";
  const snippets: [string, string][] = [
    [
      "Claude Code",
      `export ANTHROPIC_BASE_URL=${base}\nexport ANTHROPIC_API_KEY=${key}\nexport ANTHROPIC_MODEL=${model}\nclaude`,
    ],
    [
      "Anthropic SDK (Python)",
      `import anthropic\n\nclient = anthropic.Anthropic(base_url="${base}", api_key="${key}")\nmessage = client.messages.create(\n    model="${model}",\n    max_tokens=512,\n    messages=[{"role": "user", "content": "Hello!"}],\n)\nprint(message.content[0].text)`,
    ],
    [
      "OpenAI SDK (Python)",
      `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}/v1", api_key="${key}")\nreply = client.chat.completions.create(\n    model="${model}",\n    messages=[{"role": "user", "content": "Hello!"}],\n)\nprint(reply.choices[0].message.content)`,
    ],
  ];
  return (
    <section aria-labelledby="snippets-title">
      <header class="section-header">
        <h2 id="snippets-title">Use this server</h2>
        <label>
          Model{" "}
          <select value={model} onChange={(e) => setChosen((e.target as HTMLSelectElement).value)}>
            {chat.map((m) => (
              <option key={m.key} value={m.key}>
                {m.key}
              </option>
            ))}
          </select>
        </label>
      </header>
      <div class="snippets">
        {snippets.map(([title, code]) => (
          <figure key={title} class="snippet">
            <figcaption>
              {title} <CopyButton text={code} label={`Copy`} />
            </figcaption>
            <pre>
              <code>{code}</code>
            </pre>
          </figure>
        ))}
      </div>
    </section>
  );
}

interface LogEntry {
  time: string;
  request_id: string | null;
  method: string;
  path: string;
  status: number;
  model: string | null;
  input_tokens: number | null;
  output_tokens: number | null;
  cached_tokens: number | null;
  duration_ms: number;
  cache: CacheLookup | null; // how the engine's cache lookup went (null: not generated locally)
  queue_ms: number | null;
  ttft_ms: number | null; // from arrival to the first generated text
  blocked_by: string | null; // why it waited in the queue, if it did
}

interface CacheLookup {
  tier: "slot" | "ram" | "disk" | null; // null: a miss
  cached_tokens: number;
  chunk_reused_tokens: number;
  diverged_at: number | null; // token index where the prompt left the nearest cached entry
  before: string | null;
  prompt_after: string | null;
  cached_after: string | null;
}

/** A log entry's cache cell: where the prefix came from, what chunk reuse moved in, and on a partial
 * hit where the prompt left the nearest cached entry, with the text on each side. */
function CacheCell({ cache }: { cache: CacheLookup | null }) {
  if (!cache) return null;
  const moved = cache.chunk_reused_tokens ? ` + ${cache.chunk_reused_tokens} moved` : "";
  const hit = cache.tier ? `${cache.tier} ${cache.cached_tokens}${moved}` : cache.chunk_reused_tokens ? `miss${moved}` : "miss";
  if (cache.diverged_at === null) return <span data-testid="cache">{hit}</span>;
  return (
    <details data-testid="cache">
      <summary>
        {hit} · diverged at token {cache.diverged_at}
      </summary>
      <dl class="diverged">
        <dt>shared</dt>
        <dd>
          <code>…{cache.before}</code>
        </dd>
        <dt>prompt</dt>
        <dd>
          <code>{cache.prompt_after}…</code>
        </dd>
        <dt>cached</dt>
        <dd>
          <code>{cache.cached_after}…</code>
        </dd>
      </dl>
    </details>
  );
}

function millis(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

function queueText(e: LogEntry): string {
  if (e.queue_ms === null || e.queue_ms === undefined) return "";
  return e.blocked_by ? `${millis(e.queue_ms)} (${e.blocked_by})` : millis(e.queue_ms);
}

const QUIET = /^\/(metrics|_app\/|$)|^\/favicon/;

function RequestLog() {
  const [entries, setEntries] = useState<LogEntry[]>([]);
  const [state, setState] = useState<"connecting" | "live" | string>("connecting");
  const [hideQuiet, setHideQuiet] = useState(true);

  useEffect(() => {
    const abort = new AbortController();
    let retry: ReturnType<typeof setTimeout> | undefined;
    const connect = async () => {
      setState("connecting");
      try {
        const res = await request("/api/v1/logs/stream", { signal: abort.signal });
        setState("live");
        for await (const ev of sseEvents(res)) {
          const entry = JSON.parse(ev.data) as LogEntry;
          setEntries((list) => [entry, ...list].slice(0, 500));
        }
        setState("disconnected: reconnecting…");
      } catch (exc) {
        if (abort.signal.aborted) return;
        setState(`disconnected (${errorText(exc)}): reconnecting…`);
      }
      retry = setTimeout(connect, 2000);
    };
    void connect();
    return () => {
      abort.abort();
      clearTimeout(retry);
    };
  }, []);

  const shown = hideQuiet ? entries.filter((e) => !QUIET.test(e.path)) : entries;
  return (
    <section aria-labelledby="log-title">
      <header class="section-header">
        <h2 id="log-title">Request log</h2>
        <span class={`live ${state === "live" ? "on" : ""}`} role="status">
          {state}
        </span>
        <label class="check">
          <input type="checkbox" checked={hideQuiet} onChange={(e) => setHideQuiet((e.target as HTMLInputElement).checked)} />
          hide /metrics and page loads
        </label>
      </header>
      <table class="log">
        <thead>
          <tr>
            <th scope="col">time</th>
            <th scope="col">request</th>
            <th scope="col">status</th>
            <th scope="col">model</th>
            <th scope="col">in</th>
            <th scope="col">cache</th>
            <th scope="col">queued</th>
            <th scope="col">first token</th>
            <th scope="col">out</th>
            <th scope="col">duration</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((e, i) => (
            <tr key={`${e.request_id}-${i}`} class={e.status >= 400 ? "bad" : ""}>
              <td>{e.time.slice(11, 23)}</td>
              <td>
                <code>
                  {e.method} {e.path}
                </code>
              </td>
              <td>{e.status}</td>
              <td>{e.model ?? ""}</td>
              <td>{e.input_tokens ?? ""}</td>
              <td>
                <CacheCell cache={e.cache} />
              </td>
              <td>{queueText(e)}</td>
              <td>{e.ttft_ms === null || e.ttft_ms === undefined ? "" : millis(e.ttft_ms)}</td>
              <td>{e.output_tokens ?? ""}</td>
              <td>{millis(e.duration_ms)}</td>
            </tr>
          ))}
          {!shown.length && (
            <tr>
              <td colSpan={10} class="muted">
                Requests appear here as they finish.
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </section>
  );
}
