// The report as HTML: Markdown parsed by marked, sanitised by DOMPurify (both vendored, see
// vendor/README.md), every [Sn] turned into a link to its row in the sources table.

import { marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.js";

const CITATION = /\[(S\d+)\]/g;

export function reportHTML(markdown, knownIds) {
  const html = marked.parse(markdown || "", { gfm: true, breaks: false, async: false });
  const clean = DOMPurify.sanitize(html, {
    USE_PROFILE: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "img"],
    FORBID_ATTR: ["style"],
  });
  const template = document.createElement("template");
  template.innerHTML = clean;
  linkCitations(template.content, knownIds);
  for (const a of template.content.querySelectorAll("a[href]")) {
    if (!a.classList.contains("cite")) {
      a.rel = "noopener noreferrer";
      a.target = "_blank";
    }
  }
  return template.content;
}

function linkCitations(root, knownIds) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const texts = [];
  while (walker.nextNode()) {
    if (!walker.currentNode.parentElement?.closest("a, code, pre")) texts.push(walker.currentNode);
  }
  for (const node of texts) {
    const text = node.nodeValue;
    if (!CITATION.test(text)) continue;
    CITATION.lastIndex = 0;
    const fragment = document.createDocumentFragment();
    let at = 0;
    for (const match of text.matchAll(CITATION)) {
      fragment.append(text.slice(at, match.index));
      const id = match[1];
      if (knownIds.has(id)) {
        const link = document.createElement("a");
        link.className = "cite";
        link.href = `#source-${id}`;
        link.dataset.source = id;
        link.textContent = `[${id}]`;
        fragment.append(link);
      } else {
        fragment.append(match[0]);
      }
      at = match.index + match[0].length;
    }
    fragment.append(text.slice(at));
    node.replaceWith(fragment);
  }
}

// A URL shown as a link only when it is http(s); anything else (javascript:, data:) is text.
export function safeLink(url, text) {
  let parsed = null;
  try { parsed = new URL(url); } catch { /* not absolute */ }
  if (parsed && (parsed.protocol === "http:" || parsed.protocol === "https:")) {
    const link = document.createElement("a");
    link.href = parsed.href;
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    link.textContent = text;
    return link;
  }
  const span = document.createElement("span");
  span.textContent = url ? `${text} (${url})` : text;
  return span;
}
