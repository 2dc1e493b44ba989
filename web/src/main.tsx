// lmdock's web app: chat, models and server pages over the public HTTP APIs (no private endpoints).
import "highlight.js/styles/github.css";
import "./style.css";
import { render } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { apiKey, errorText, listModels, type ModelEntry, onUnauthorized, setApiKey } from "./api";
import { ChatPage } from "./chat";
import { ModelsPage } from "./models";
import { ServerPage } from "./server";

const PAGES = [
  ["chat", "Chat"],
  ["models", "Models"],
  ["server", "Server"],
] as const;
type Page = (typeof PAGES)[number][0];

function pageFromHash(): Page {
  const name = window.location.hash.replace(/^#\/?/, "");
  return (PAGES.find(([p]) => p === name)?.[0] ?? "chat") as Page;
}

function App() {
  const [page, setPage] = useState<Page>(pageFromHash);
  const [needKey, setNeedKey] = useState<string | null>(null); // the server's 401 message
  const [keyVersion, setKeyVersion] = useState(0);
  const [models, setModels] = useState<ModelEntry[]>([]);
  const [modelsError, setModelsError] = useState<string | null>(null);

  useEffect(() => {
    const onHash = () => setPage(pageFromHash());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => onUnauthorized((err) => setNeedKey(err.detail)), []);

  const refresh = useCallback(async () => {
    try {
      setModels(await listModels());
      setModelsError(null);
    } catch (exc) {
      setModelsError(errorText(exc));
    }
  }, []);
  useEffect(() => {
    void refresh();
  }, [keyVersion]);

  return (
    <>
      <header class="topbar">
        <span class="brand">lmdock</span>
        <nav aria-label="Pages">
          {PAGES.map(([name, label]) => (
            <a key={name} href={`#/${name}`} class={page === name ? "active" : ""} aria-current={page === name ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="spacer" />
        {apiKey() && (
          <button
            type="button"
            class="small"
            onClick={() => {
              setApiKey("");
              setKeyVersion((v) => v + 1);
            }}
          >
            Forget API key
          </button>
        )}
      </header>
      <main key={keyVersion}>
        {modelsError && needKey === null && page === "chat" && <p class="error banner" role="alert">{modelsError}</p>}
        {page === "chat" && <ChatPage models={models} onModelsChanged={refresh} />}
        {page === "models" && <ModelsPage models={models} error={modelsError} refresh={refresh} />}
        {page === "server" && <ServerPage models={models} />}
      </main>
      {needKey !== null && (
        <KeyDialog
          reason={needKey}
          onSave={(key) => {
            setApiKey(key);
            setNeedKey(null);
            setKeyVersion((v) => v + 1);
          }}
        />
      )}
    </>
  );
}

function KeyDialog({ reason, onSave }: { reason: string; onSave: (key: string) => void }) {
  const [key, setKey] = useState("");
  const input = useRef<HTMLInputElement>(null);
  const had = apiKey();
  useEffect(() => input.current?.focus(), []);
  return (
    <div class="backdrop" role="dialog" aria-modal="true" aria-labelledby="key-title">
      <form
        class="dialog"
        onSubmit={(e) => {
          e.preventDefault();
          if (key.trim()) onSave(key.trim());
        }}
      >
        <h2 id="key-title">API key</h2>
        <p>
          {had ? "The server refused the saved key" : "This server was started with --api-key"} (
          <em>{reason}</em>). Enter a key; it is kept in this browser only (localStorage) and sent as{" "}
          <code>x-api-key</code>.
        </p>
        <label>
          API key
          <input ref={input} type="password" autoComplete="off" value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} />
        </label>
        <div class="actions">
          <button type="submit" class="primary" disabled={!key.trim()}>
            Save key
          </button>
        </div>
      </form>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
