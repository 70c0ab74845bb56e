// A small Python highlighter: the page must work offline, without a CDN or a build step.
(function () {
  const KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else except " +
    "finally for from global if import in is lambda nonlocal not or pass raise return try while with yield match case").split(" "));
  const BUILTINS = new Set(("print len range int str float list dict set tuple sum min max abs sorted enumerate zip map " +
    "filter open isinstance type super object Exception ValueError TypeError KeyError IndexError any all round").split(" "));
  const TOKEN = /(#[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|[rbfu]{0,2}"(?:\\.|[^"\\\n])*"|[rbfu]{0,2}'(?:\\.|[^'\\\n])*')|(\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)/gi;

  function escapeHtml(s) {
    // quotes too: the result also lands in attributes (a code fence's language tag comes from the model)
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  function highlightPython(code) {
    let out = "", last = 0, m;
    TOKEN.lastIndex = 0;
    while ((m = TOKEN.exec(code)) !== null) {
      out += escapeHtml(code.slice(last, m.index));
      const t = escapeHtml(m[0]);
      if (m[1]) out += '<span class="com">' + t + "</span>";
      else if (m[2]) out += '<span class="str">' + t + "</span>";
      else if (m[3]) out += '<span class="num">' + t + "</span>";
      else if (KEYWORDS.has(m[4])) out += '<span class="kw">' + t + "</span>";
      else if (BUILTINS.has(m[4])) out += '<span class="bi">' + t + "</span>";
      else if (code[TOKEN.lastIndex] === "(") out += '<span class="fn">' + t + "</span>";
      else out += t;
      last = TOKEN.lastIndex;
    }
    return out + escapeHtml(code.slice(last));
  }

  window.ociHighlight = { highlightPython, escapeHtml };
})();
