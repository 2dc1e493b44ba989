// The web app's only way to the server: lmdock's public HTTP APIs, with the API key the user gave.

const KEY_STORAGE = "lmdock.apiKey";

export function apiKey(): string {
  return localStorage.getItem(KEY_STORAGE) ?? "";
}

export function setApiKey(key: string): void {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

/** An error response from the API, with the message from its error envelope. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly kind: string,
    readonly detail: string,
  ) {
    super(status ? `${status} ${kind || "error"}: ${detail}` : `${kind || "error"}: ${detail}`);
  }
}

type Listener = (err: ApiError) => void;
const unauthorizedListeners = new Set<Listener>();

/** Called whenever the server answers 401: the app then asks for the key. */
export function onUnauthorized(fn: Listener): () => void {
  unauthorizedListeners.add(fn);
  return () => unauthorizedListeners.delete(fn);
}

function headers(json: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  if (json) out["content-type"] = "application/json";
  const key = apiKey();
  if (key) out["x-api-key"] = key;
  return out;
}

/** Reads an Anthropic or OpenAI error envelope (or anything else) into an ApiError. */
export function errorFromBody(status: number, text: string): ApiError {
  let kind = "";
  let detail = text.trim();
  try {
    const body = JSON.parse(text);
    const err = body?.error ?? body;
    if (typeof err === "string") detail = err;
    else if (err && typeof err === "object") {
      kind = String(err.type ?? err.code ?? "");
      detail = String(err.message ?? err.detail ?? text);
    }
  } catch {
    // not JSON: keep the text
  }
  return new ApiError(status, kind, detail || "request failed");
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  signal?: AbortSignal;
}

/** fetch() against the server; throws ApiError for any non-2xx answer and network failures. */
export async function request(path: string, opts: RequestOptions = {}): Promise<Response> {
  const json = opts.body !== undefined;
  let res: Response;
  try {
    res = await fetch(path, {
      method: opts.method ?? (json ? "POST" : "GET"),
      headers: headers(json),
      body: json ? JSON.stringify(opts.body) : undefined,
      signal: opts.signal,
      cache: "no-store",
    });
  } catch (exc) {
    if (exc instanceof DOMException && exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network_error", "the server did not answer (is `lmdock serve` running?)");
  }
  if (!res.ok) {
    const err = errorFromBody(res.status, await res.text());
    if (res.status === 401) unauthorizedListeners.forEach((fn) => fn(err));
    throw err;
  }
  return res;
}

export async function getJSON<T>(path: string, signal?: AbortSignal): Promise<T> {
  return (await request(path, { signal })).json() as Promise<T>;
}

export async function postJSON<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
  return (await request(path, { body, signal })).json() as Promise<T>;
}

export interface SseEvent {
  event: string;
  data: string;
}

/** Server-Sent Events from a fetch() body (EventSource cannot send the API key header). */
export async function* sseEvents(res: Response): AsyncGenerator<SseEvent> {
  if (!res.body) return;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end: number;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        let event = "message";
        const data: string[] = [];
        for (const line of frame.split(/\r?\n/)) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = val;
          else if (field === "data") data.push(val);
        }
        if (data.length) yield { event, data: data.join("\n") };
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// ---- wire types of the management API (GET /api/v1/models) ----

export interface ModelEntry {
  type: string;
  key: string;
  display_name: string;
  publisher: string | null;
  architecture: string | null;
  quantization: { name: string | null; bits_per_weight: number | null } | null;
  size_bytes: number | null;
  format?: string; // "gguf", or "upstream" for a model served by upstream engines
  params_string: string | null;
  max_context_length: number | null;
  capabilities: Record<string, boolean>;
  state: "loaded" | "loading" | "not-loaded" | "unavailable";
  loaded_instances: { id: string; config: Record<string, number | string | boolean | null>; loaded_at: number }[];
  aliases: string[];
  memory_estimate?: MemoryEstimate;
  memory_estimates?: Record<string, MemoryEstimate>; // f16 and q8_0 K/V at the same context
  memory_available_bytes?: number | null;
  error?: string;
}

export interface MemoryEstimate {
  context_length: number;
  cache_type_k: string;
  cache_type_v: string;
  total_bytes: number;
  weights_bytes: number;
  kv_cache_bytes: number;
  compute_bytes: number;
  process_bytes: number;
}

export async function listModels(signal?: AbortSignal): Promise<ModelEntry[]> {
  return (await getJSON<{ models: ModelEntry[] }>("/api/v1/models", signal)).models;
}

export function formatBytes(n: number | null | undefined): string {
  if (n == null) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v < 10 && i ? v.toFixed(2) : v < 100 && i ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function errorText(exc: unknown): string {
  if (exc instanceof Error) return exc.message;
  return String(exc);
}
