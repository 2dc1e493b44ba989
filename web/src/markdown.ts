// Model output as HTML: markdown (marked), code highlighted (highlight.js), and always sanitised
// (DOMPurify) before it reaches the page: model text is untrusted input.
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/common";
import { Marked } from "marked";

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    code({ text, lang }) {
      const name = (lang ?? "").trim().split(/\s+/)[0] ?? "";
      let html: string;
      let language = "plaintext";
      if (name && hljs.getLanguage(name)) {
        language = name;
        html = hljs.highlight(text, { language: name, ignoreIllegals: true }).value;
      } else if (text.length < 20_000) {
        const auto = hljs.highlightAuto(text);
        language = auto.language ?? "plaintext";
        html = auto.value;
      } else {
        html = escapeHtml(text);
      }
      return `<pre><code class="hljs language-${escapeHtml(language)}">${html}</code></pre>\n`;
    },
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function renderMarkdown(text: string): string {
  const html = marked.parse(text) as string;
  return DOMPurify.sanitize(html, {
    ADD_ATTR: ["target"],
    // No images: a model's image links are made up, and would be fetched from this server.
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img", "picture", "video", "audio"],
    FORBID_ATTR: ["style"],
  });
}
