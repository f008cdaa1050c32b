// Model output as Markdown, built as DOM nodes whose text is set with `textContent` only: what
// a model writes is never parsed as HTML, so `<img onerror=...>` shows up as those characters.
// Supported: fenced code blocks, headings, bullet and numbered lists, block quotes, paragraphs,
// inline code, bold and italic. Links stay text.

function element(tag, className) {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  return node;
}

const INLINE = /(`[^`\n]+`|\*\*[^*\n]+\*\*|__[^_\n]+__|\*[^*\s][^*\n]*\*|_[^_\s][^_\n]*_)/;

/// Appends `text` to `parent` with inline code, bold and italic as elements.
function appendInline(parent, text) {
  for (const part of text.split(INLINE)) {
    if (!part) {
      continue;
    }
    let node;
    if (part.length > 2 && part.startsWith("`") && part.endsWith("`")) {
      node = element("code");
      node.textContent = part.slice(1, -1);
    } else if (
      part.length > 4 &&
      ((part.startsWith("**") && part.endsWith("**")) ||
        (part.startsWith("__") && part.endsWith("__")))
    ) {
      node = element("strong");
      node.textContent = part.slice(2, -2);
    } else if (
      part.length > 2 &&
      ((part.startsWith("*") && part.endsWith("*")) || (part.startsWith("_") && part.endsWith("_")))
    ) {
      node = element("em");
      node.textContent = part.slice(1, -1);
    } else {
      node = document.createTextNode(part);
    }
    parent.append(node);
  }
}

/// Renders `text` into a fresh fragment. An unclosed code fence (mid-stream) is a code block
/// up to the end, so code looks like code while it streams in.
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = text.split("\n");
  let paragraph = [];
  let list = null;

  const flushParagraph = () => {
    if (paragraph.length > 0) {
      const p = element("p");
      paragraph.forEach((line, index) => {
        if (index > 0) {
          p.append(element("br"));
        }
        appendInline(p, line);
      });
      fragment.append(p);
      paragraph = [];
    }
  };
  const closeList = () => {
    list = null;
  };

  for (let index = 0; index < lines.length; index++) {
    const line = lines[index];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+#.-]*)/);
    if (fence) {
      flushParagraph();
      closeList();
      const code = [];
      index++;
      while (index < lines.length && !lines[index].trim().startsWith(fence[1])) {
        code.push(lines[index]);
        index++;
      }
      const pre = element("pre");
      const codeNode = element("code");
      if (fence[2]) {
        pre.dataset.language = fence[2];
      }
      codeNode.textContent = code.join("\n");
      pre.append(codeNode);
      fragment.append(pre);
      continue;
    }
    if (line.trim() === "") {
      flushParagraph();
      closeList();
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flushParagraph();
      closeList();
      // h1/h2 are the page's own; the model's headings start at h3.
      const node = element(`h${Math.min(heading[1].length + 2, 6)}`);
      appendInline(node, heading[2]);
      fragment.append(node);
      continue;
    }
    const bullet = line.match(/^\s*[-*+]\s+(.*)$/);
    const numbered = line.match(/^\s*\d+[.)]\s+(.*)$/);
    if (bullet || numbered) {
      flushParagraph();
      const tag = bullet ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = element(tag);
        fragment.append(list);
      }
      const item = element("li");
      appendInline(item, (bullet || numbered)[1]);
      list.append(item);
      continue;
    }
    const quote = line.match(/^>\s?(.*)$/);
    if (quote) {
      flushParagraph();
      closeList();
      const node = element("blockquote");
      appendInline(node, quote[1]);
      fragment.append(node);
      continue;
    }
    closeList();
    paragraph.push(line);
  }
  flushParagraph();
  return fragment;
}
