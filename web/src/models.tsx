// The models page: the store (GET /api/v1/models), load/unload, and download jobs with live progress.
import { useEffect, useState } from "preact/hooks";
import { errorText, formatBytes, getJSON, type ModelEntry, postJSON } from "./api";

interface Props {
  models: ModelEntry[];
  error: string | null;
  refresh: () => Promise<void>;
}

export function ModelsPage({ models, error, refresh }: Props) {
  const [busy, setBusy] = useState<Record<string, string>>({});
  const [message, setMessage] = useState<{ text: string; error: boolean } | null>(null);

  useEffect(() => {
    void refresh();
  }, []);

  async function act(key: string, label: string, fn: () => Promise<string>) {
    setBusy((b) => ({ ...b, [key]: label }));
    setMessage(null);
    try {
      setMessage({ text: await fn(), error: false });
    } catch (exc) {
      setMessage({ text: errorText(exc), error: true });
    } finally {
      setBusy((b) => {
        const { [key]: _, ...rest } = b;
        return rest;
      });
      await refresh();
    }
  }

  return (
    <div class="page models-page">
      <section aria-labelledby="store-title">
        <header class="section-header">
          <h2 id="store-title">Models in the store</h2>
          <button type="button" onClick={() => void refresh()}>
            Refresh
          </button>
        </header>
        {error && <p class="error" role="alert">{error}</p>}
        {message && (
          <p class={message.error ? "error" : "notice"} role={message.error ? "alert" : "status"}>
            {message.text}
          </p>
        )}
        <table class="models">
          <thead>
            <tr>
              <th scope="col">Model</th>
              <th scope="col">Params</th>
              <th scope="col">Size</th>
              <th scope="col">Quant</th>
              <th scope="col">Capabilities</th>
              <th scope="col">Memory estimate</th>
              <th scope="col">State</th>
              <th scope="col">Load with settings</th>
            </tr>
          </thead>
          <tbody>
            {models.map((m) => (
              <ModelRow
                key={m.key}
                model={m}
                busy={busy[m.key]}
                onLoad={(config) =>
                  act(m.key, "loading…", async () => {
                    const res = await postJSON<{ load_time_seconds: number; config: Record<string, unknown> }>(
                      "/api/v1/models/load",
                      { model: m.key, ...config },
                    );
                    return `Loaded ${m.key} in ${res.load_time_seconds.toFixed(1)} s (context ${res.config.context_length}, parallel ${res.config.parallel}).`;
                  })
                }
                onUnload={() =>
                  act(m.key, "unloading…", async () => {
                    await postJSON("/api/v1/models/unload", { model: m.key });
                    return `Unloaded ${m.key}.`;
                  })
                }
              />
            ))}
            {!models.length && !error && (
              <tr>
                <td colSpan={8}>No models yet: download one below.</td>
              </tr>
            )}
          </tbody>
        </table>
      </section>
      <Downloads onFinished={refresh} />
    </div>
  );
}

const KV_TYPES = ["f16", "bf16", "q8_0", "q5_1", "q4_0"];

function kvLabel(k: unknown, v: unknown): string {
  return k === v ? String(k) : `${String(k)}/${String(v)}`;
}

/** The memory a load would take at the context it would get, with f16 and with q8_0 K/V, and whether
 * each fits what the machine has available now. */
function MemoryCell({ model: m }: { model: ModelEntry }) {
  const est = m.memory_estimate;
  if (!est) return <>–</>;
  const available = m.memory_available_bytes;
  const rows = Object.entries(m.memory_estimates ?? { [kvLabel(est.cache_type_k, est.cache_type_v)]: est });
  return (
    <div class="memory-estimate" data-testid="memory-estimate">
      {rows.map(([type, e]) => {
        const tooBig = available != null && e.total_bytes > available;
        return (
          <div
            key={type}
            class={tooBig ? "error" : undefined}
            title={`weights ${formatBytes(e.weights_bytes)} + KV cache ${formatBytes(e.kv_cache_bytes)} + buffers and process ${formatBytes(e.compute_bytes + e.process_bytes)}`}
          >
            <span class="muted">{type}</span> {formatBytes(e.total_bytes)}
            {tooBig ? " (does not fit)" : ""}
          </div>
        );
      })}
      <div class="muted small-text">
        at {est.context_length.toLocaleString()} context
        {available != null ? ` · ${formatBytes(available)} available` : ""}
      </div>
    </div>
  );
}

interface RowProps {
  model: ModelEntry;
  busy?: string;
  onLoad: (config: Record<string, number | string>) => void;
  onUnload: () => void;
}

function ModelRow({ model: m, busy, onLoad, onUnload }: RowProps) {
  const [ctx, setCtx] = useState("");
  const [parallel, setParallel] = useState("");
  const [ttl, setTtl] = useState("");
  const [kvType, setKvType] = useState("");
  const [flash, setFlash] = useState("");
  const instance = m.loaded_instances[0];
  const caps = Object.entries(m.capabilities)
    .filter(([, on]) => on)
    .map(([name]) => name.replace("trained_for_tool_use", "tools"));
  if (m.type === "embedding") caps.unshift("embedding");
  const upstream = m.format === "upstream";
  if (upstream) caps.unshift("upstream");
  const state = busy ?? m.state;
  return (
    <tr data-model={m.key}>
      <th scope="row">
        <div class="model-key">{m.key}</div>
        <div class="muted small-text" title={m.aliases.length ? `also answers to: ${m.aliases.join(", ")}` : undefined}>
          {[m.display_name !== m.key ? m.display_name : "", m.architecture].filter(Boolean).join(" · ")}
        </div>
        {m.error && <div class="error small-text">{m.error}</div>}
      </th>
      <td>{m.params_string ?? "–"}</td>
      <td class="nowrap">{formatBytes(m.size_bytes)}</td>
      <td>{m.quantization?.name ?? "–"}</td>
      <td>
        {caps.length ? caps.map((c) => <span key={c} class="badge">{c}</span>) : <span class="muted">–</span>}
      </td>
      <td>
        <MemoryCell model={m} />
      </td>
      <td>
        <span class={`state state-${m.state}`} data-testid="state">
          {state}
        </span>
        {instance && (
          <div class="muted small-text">
            ctx {String(instance.config.context_length)} · parallel {String(instance.config.parallel)}
            {instance.config.cache_type_k ? ` · KV ${kvLabel(instance.config.cache_type_k, instance.config.cache_type_v)}` : ""}
            {instance.config.flash_attention != null ? ` · FA ${instance.config.flash_attention ? "on" : "off"}` : ""}
            {instance.config.ttl_seconds ? ` · ttl ${instance.config.ttl_seconds}s` : ""}
          </div>
        )}
      </td>
      <td>
        {upstream ? (
          <span class="muted small-text">served by upstream engines</span>
        ) : (
          <form
            class="load-form"
            aria-label={`Load ${m.key}`}
            onSubmit={(e) => {
              e.preventDefault();
              const config: Record<string, number | string> = {};
              if (ctx) config.context_length = Number(ctx);
              if (parallel) config.parallel = Number(parallel);
              if (ttl) config.ttl = Number(ttl);
              if (kvType) config.kv_cache_type = kvType;
              if (flash) config.flash_attn = flash;
              onLoad(config);
            }}
          >
            <input aria-label={`Context length for ${m.key}`} placeholder="context" inputMode="numeric" value={ctx} onInput={(e) => setCtx((e.target as HTMLInputElement).value)} />
            <input aria-label={`Parallel sequences for ${m.key}`} placeholder="parallel" inputMode="numeric" value={parallel} onInput={(e) => setParallel((e.target as HTMLInputElement).value)} />
            <input aria-label={`TTL seconds for ${m.key}`} placeholder="TTL s" inputMode="numeric" value={ttl} onInput={(e) => setTtl((e.target as HTMLInputElement).value)} />
            <select aria-label={`KV cache type for ${m.key}`} value={kvType} onChange={(e) => setKvType((e.target as HTMLSelectElement).value)}>
              <option value="">KV: server's</option>
              {KV_TYPES.map((t) => (
                <option key={t} value={t}>
                  KV {t}
                </option>
              ))}
            </select>
            <select aria-label={`Flash attention for ${m.key}`} value={flash} onChange={(e) => setFlash((e.target as HTMLSelectElement).value)}>
              <option value="">FA: server's</option>
              <option value="auto">FA auto</option>
              <option value="on">FA on</option>
              <option value="off">FA off</option>
            </select>
            <button type="submit" class="primary small" disabled={!!busy || !!m.error} aria-label={`Load ${m.key}`}>
              {m.state === "loaded" ? "Reload" : "Load"}
            </button>
            <button type="button" class="small" disabled={!!busy || m.state !== "loaded"} onClick={onUnload} aria-label={`Unload ${m.key}`}>
              Unload
            </button>
          </form>
        )}
      </td>
    </tr>
  );
}

interface Job {
  job_id: string;
  status: "downloading" | "completed" | "failed" | "already_downloaded";
  model: string;
  files: string[];
  total_size_bytes: number;
  downloaded_bytes: number;
  bytes_per_second?: number;
  error?: string;
}

function Downloads({ onFinished }: { onFinished: () => Promise<void> }) {
  const [jobs, setJobs] = useState<Job[]>([]);
  const [repo, setRepo] = useState("");
  const [file, setFile] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [starting, setStarting] = useState(false);
  const active = jobs.some((j) => j.status === "downloading");

  // Jobs started before this page opened (from the CLI or another tab) show up too.
  useEffect(() => {
    getJSON<Record<string, Job[]>>("/api/v1/models/download/status")
      .then((groups) => setJobs(Object.values(groups).flat()))
      .catch(() => {});
  }, []);

  useEffect(() => {
    if (!active) return;
    const timer = setInterval(async () => {
      const next = await Promise.all(
        jobs.map((j) => (j.status === "downloading" ? getJSON<Job>(`/api/v1/models/download/${j.job_id}`).catch(() => j) : j)),
      );
      setJobs(next);
      if (next.some((j, i) => j.status !== "downloading" && jobs[i].status === "downloading")) void onFinished();
    }, 500);
    return () => clearInterval(timer);
  }, [jobs, active]);

  async function start(e: Event) {
    e.preventDefault();
    const spec = repo.trim().replace(/\/+$/, "");
    const extra = file.trim();
    if (!spec) return;
    setError(null);
    setStarting(true);
    try {
      const body: Record<string, string> = { model: spec };
      if (extra.toLowerCase().endsWith(".gguf")) body.model = `${spec}/${extra}`;
      else if (extra) body.quantization = extra;
      const job = await postJSON<Job>("/api/v1/models/download", body);
      setJobs((list) => [job, ...list.filter((j) => j.job_id !== job.job_id)]);
      if (job.status !== "downloading") void onFinished();
    } catch (exc) {
      setError(errorText(exc));
    } finally {
      setStarting(false);
    }
  }

  return (
    <section aria-labelledby="download-title">
      <h2 id="download-title">Download from Hugging Face</h2>
      <form class="download-form" onSubmit={start}>
        <label>
          Repository
          <input placeholder="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF" value={repo} onInput={(e) => setRepo((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          File or quantization (optional)
          <input placeholder="Q4_K_M or model-q4_k_m.gguf" value={file} onInput={(e) => setFile((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" class="primary" disabled={starting || !repo.trim()}>
          Download
        </button>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      <ul class="jobs">
        {jobs.map((j) => {
          const pct = j.total_size_bytes ? Math.min(100, (100 * j.downloaded_bytes) / j.total_size_bytes) : 0;
          return (
            <li key={j.job_id} data-job={j.job_id}>
              <div>
                <strong>{j.model}</strong> <span class="muted">{j.files.join(", ")}</span>
              </div>
              <progress max={100} value={j.status === "downloading" ? pct : 100} aria-label={`Download of ${j.model}`} />
              <div class="muted small-text" data-testid="job-status">
                {j.status === "downloading"
                  ? `${pct.toFixed(0)} % · ${formatBytes(j.downloaded_bytes)} of ${formatBytes(j.total_size_bytes)}${j.bytes_per_second ? ` · ${formatBytes(j.bytes_per_second)}/s` : ""}`
                  : j.status === "failed"
                    ? `failed: ${j.error ?? "unknown error"}`
                    : j.status === "already_downloaded"
                      ? `already downloaded · ${formatBytes(j.total_size_bytes)}`
                      : `completed · ${formatBytes(j.total_size_bytes)}`}
              </div>
            </li>
          );
        })}
      </ul>
    </section>
  );
}
