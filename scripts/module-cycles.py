#!/usr/bin/env python3
"""Intra-crate module graph from source text, and its cycles.

Usage: scripts/module-cycles.py <crate-src-root-file> [--out-dir DIR] [-v]
Modules: `mod x;` (file) and `mod x { … }` (inline), skipping any module
under #[cfg(test)]; `include!(concat!(env!("OUT_DIR"), "/f.rs"))` is
expanded from --out-dir. Uses: every path `crate::…`, `super::…`,
`self::…`, or starting with a child module's name, including `use` trees
with braces; an edge goes to the deepest module the path names. Reports
strongly connected components of the uses graph (cycles), and separately
uses of an ancestor module (which form a cycle with ownership).
"""
import os, re, sys

def strip(src):
    # Remove comments, string/char literals (keep structure and newlines).
    out = []; i = 0; n = len(src)
    while i < n:
        c = src[i]
        if src.startswith('//', i):
            j = src.find('\n', i); j = n if j < 0 else j
            out.append(' '); i = j
        elif src.startswith('/*', i):
            depth = 0
            while i < n:
                if src.startswith('/*', i): depth += 1; i += 2
                elif src.startswith('*/', i): depth -= 1; i += 2
                else: i += 1
                if depth == 0: break
            out.append(' ')
        elif c == 'r' and re.match(r'r#*"', src[i:i+10]) and (i == 0 or not (src[i-1].isalnum() or src[i-1] == '_')):
            m = re.match(r'r(#*)"', src[i:]); hashes = m.group(1)
            end = src.find('"' + hashes, i + len(m.group(0)))
            out.append('""'); i = end + 1 + len(hashes)
        elif c == 'b' and src.startswith('b"', i) and (i == 0 or not (src[i-1].isalnum() or src[i-1] == '_')):
            i += 1; continue
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == '\\' else 1
            # Keep only the literals include! needs; blank the rest.
            out.append(src[i:j+1] if 'OUT_DIR' in src[max(0,i-60):i] or src[max(0,i-12):i].rstrip().endswith('include!(') or '.rs' in src[i:j+1] else '""')
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", src[i:])
            if m: out.append("' '"); i += len(m.group(0))
            else: out.append(c); i += 1
        else:
            out.append(c); i += 1
    return ''.join(out)

def match_brace(s, i):
    depth = 0
    for j in range(i, len(s)):
        if s[j] == '{': depth += 1
        elif s[j] == '}':
            depth -= 1
            if depth == 0: return j
    raise ValueError('unbalanced')

class Mod:
    def __init__(self, path, text):
        self.path = path; self.text = text; self.children = {}

MODRE = re.compile(r'((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_]\w*)\s*([;{])')
INCRE = re.compile(r'include!\s*\(\s*(?:concat!\s*\(\s*env!\s*\(\s*""\s*\)\s*,\s*)?"([^"]+)"')

def parse(file_text, modpath, dirpath, is_root_like, out_dir, mods):
    text = strip(file_text)
    # expand include!
    def inc(m):
        fn = m.group(1).lstrip('/')
        cand = os.path.join(out_dir, fn) if out_dir else None
        if cand and os.path.exists(cand):
            return strip(open(cand).read())
        return ''
    for _ in range(5):
        t2 = INCRE.sub(lambda m: inc(m) + '(', text)
        if t2 == text: break
        text = t2
    build(text, modpath, dirpath, is_root_like, out_dir, mods)

def build(text, modpath, dirpath, is_root_like, out_dir, mods):
    own = []; i = 0; children = {}
    while True:
        m = MODRE.search(text, i)
        if not m:
            own.append(text[i:]); break
        attrs, name, kind = m.group(1), m.group(2), m.group(3)
        own.append(text[i:m.start()])
        test = 'cfg(test)' in attrs.replace(' ', '')
        child = modpath + [name]
        if kind == '{':
            end = match_brace(text, m.end() - 1)
            body = text[m.end():end]
            if not test:
                sub = os.path.join(dirpath, name)
                build(body, child, sub, True, out_dir, mods)
                children[name] = child
            i = end + 1
        else:
            i = m.end()
            if test: continue
            base = dirpath
            for cand in (os.path.join(base, name + '.rs'), os.path.join(base, name, 'mod.rs')):
                if os.path.exists(cand):
                    sub = os.path.join(base, name)
                    parse(open(cand).read(), child, sub, True, out_dir, mods)
                    children[name] = child
                    break
            else:
                print(f'warning: no file for module {"::".join(child)}', file=sys.stderr)
    mods['::'.join(modpath)] = Mod(modpath, ''.join(own))
    mods['::'.join(modpath)].children = children

PATHRE = re.compile(r'(?<![\w:$])((?:crate|super|self|[A-Za-z_]\w*)(?:\s*::\s*(?:[A-Za-z_]\w*|\{))+)')

def expand_use_trees(text):
    # Expand `a::b::{c, d::{e}}` into a::b::c, a::b::d::e (only for paths we care about).
    res = []
    for m in re.finditer(r'\buse\s+([^;]+);', text):
        res.extend(expand(m.group(1).replace(' ', '').replace('\n', ''), ''))
    return res

def expand(tree, prefix):
    tree = tree.strip()
    if '{' not in tree:
        p = tree.split(' as ')[0]
        p = re.sub(r'as\w+$', '', p)
        return [prefix + p]
    i = tree.index('{')
    head = tree[:i]
    end = match_brace(tree, i)
    inner = tree[i+1:end]
    parts = []; depth = 0; cur = ''
    for ch in inner:
        if ch == ',' and depth == 0:
            parts.append(cur); cur = ''
        else:
            depth += ch == '{'; depth -= ch == '}'; cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p.strip():
            out.extend(expand(p, prefix + head))
    return out

def resolve(mods, cur, segs):
    # segs: list of identifiers; returns module key or None
    if not segs: return None
    if segs[0] == 'crate': base = ['crate']; segs = segs[1:]
    elif segs[0] == 'super':
        base = list(cur)
        while segs and segs[0] == 'super':
            base = base[:-1]; segs = segs[1:]
    elif segs[0] == 'self': base = list(cur); segs = segs[1:]
    elif segs[0] in mods['::'.join(cur)].children: base = list(cur)
    else: return None
    node = base
    for s in segs:
        k = '::'.join(node)
        if k in mods and s in mods[k].children:
            node = node + [s]
        else: break
    return '::'.join(node)

def graph(mods):
    edges = {k: set() for k in mods}
    for k, m in mods.items():
        cur = m.path
        paths = set()
        for p in expand_use_trees(m.text):
            paths.add(p)
        for pm in PATHRE.finditer(m.text):
            # `a::{b, c}` only occurs in use trees, which are expanded above;
            # cutting it to `a` would invent a use of the parent.
            if pm.group(1).rstrip().endswith('{'):
                continue
            paths.add(re.sub(r'\s', '', pm.group(1)).rstrip(':'))
        for p in paths:
            segs = [s for s in p.split('::') if s and s != '*' and s != '{']
            t = resolve(mods, cur, segs)
            if t is not None and t != k:
                edges[k].add(t)
    return edges

def sccs(edges):
    index = {}; low = {}; st = []; on = set(); out = []; c = [0]
    sys.setrecursionlimit(10000)
    def sc(v):
        index[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in edges[v]:
            if w not in index: sc(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            out.append(comp)
    for v in edges:
        if v not in index: sc(v)
    return [c for c in out if len(c) > 1]

def main():
    args = sys.argv[1:]
    verbose = '-v' in args; args = [a for a in args if a != '-v']
    out_dir = None
    if '--out-dir' in args:
        i = args.index('--out-dir'); out_dir = args[i+1]; del args[i:i+2]
    root = args[0]
    mods = {}
    parse(open(root).read(), ['crate'], os.path.dirname(root), True, out_dir, mods)
    edges = graph(mods)
    print(f'{root}: {len(mods)} modules, {sum(len(v) for v in edges.values())} use edges')
    if verbose:
        for k in sorted(edges):
            for t in sorted(edges[k]): print(f'  {k} -> {t}')
    cyc = sccs(edges)
    for comp in cyc:
        comp = sorted(comp)
        print(f'CYCLE ({len(comp)} modules): ' + ', '.join(comp))
        for a in comp:
            for b in sorted(edges[a]):
                if b in comp: print(f'    {a} -> {b}')
    up = [(k, t) for k in edges for t in edges[k] if (k + '::').startswith(t + '::') ]
    for k, t in sorted(up):
        print(f'uses an ancestor: {k} -> {t}')
    if not cyc: print('no cycles')
    return 1 if cyc else 0

sys.exit(main())
