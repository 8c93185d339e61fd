// The layout check of tests/analysis/test_report_layout.py, run in DevTools' world on a
// report.html: everything outside the viewport (outside a table's own scroll box, except in
// print), every element whose content overflow:hidden/clip or an ellipsis cuts, SVG text
// outside its SVG, every number (.num), bar value, severity or finding label that broke
// over more than one line, labels wider than their box, tables that scroll in their box,
// and folds whose content is not shown.
(() => {
  const vw = document.documentElement.clientWidth;
  const say = (el, r) => el.tagName.toLowerCase() + '.'
    + String(el.className.baseVal ?? el.className)
    + ' [' + Math.round(r.left) + ',' + Math.round(r.right) + '] '
    + (el.textContent || '').trim().slice(0, 50);
  const out = {scrollWidth: document.documentElement.scrollWidth,
               bodyScrollWidth: document.body.scrollWidth, viewport: vw,
               outside: [], clipped: [], wrapped: [], scrollBoxes: 0, scrolling: 0,
               labels: 0, numbers: 0, hiddenFolds: 0, folds: 0};
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    const box = el.closest('.scroll');  // on paper nothing scrolls: no box is exempt
    if (box && box !== el && !matchMedia('print').matches) continue;
    if (r.right > vw + 0.5 || r.left < -0.5) out.outside.push(say(el, r));
  }
  for (const el of document.body.querySelectorAll('*')) {
    const cs = getComputedStyle(el);
    const cuts = ['hidden', 'clip'].includes(cs.overflowX) || cs.textOverflow === 'ellipsis';
    if (cuts && el.scrollWidth > el.clientWidth + 1) out.clipped.push(say(el, el.getBoundingClientRect()));
  }
  for (const t of document.querySelectorAll('svg text')) {
    const s = t.ownerSVGElement.getBoundingClientRect(), r = t.getBoundingClientRect();
    if (r.right > s.right + 0.5 || r.left < s.left - 0.5) out.clipped.push('svg ' + say(t, r));
  }
  for (const el of document.querySelectorAll('.num, .bar-value, .sev, .label')) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const rects = [...range.getClientRects()].filter(r => r.width > 0);
    if (!rects.length) continue;
    out.numbers++;
    if (new Set(rects.map(r => Math.round(r.top))).size > 1) out.wrapped.push(say(el, el.getBoundingClientRect()));
  }
  for (const el of document.querySelectorAll('.bar-label, .tl-label, summary, h3')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0) continue;
    out.labels++;
    if (el.scrollWidth > el.clientWidth + 1) out.clipped.push('label ' + say(el, r));
  }
  for (const box of document.querySelectorAll('.scroll')) {
    if (box.getBoundingClientRect().width === 0) continue;
    out.scrollBoxes++;
    if (box.scrollWidth > box.clientWidth + 1) out.scrolling++;
  }
  for (const body of document.querySelectorAll('details > .body')) {
    out.folds++;
    if (!body.checkVisibility()) out.hiddenFolds++;
  }
  return out;
})()
