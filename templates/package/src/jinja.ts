// A small Jinja interpreter for chat templates, so the package renders the model's own
// template with zero runtime dependencies. It covers what Hugging Face chat templates use:
// text, {{ }}, {% if/elif/else %}, {% for x in xs [if c] %} with loop.* and else, {% set %}
// (namespace attributes too), {# #}, whitespace control (-) with trim_blocks and
// lstrip_blocks on (Hugging Face's settings); expressions with literals, lists, dicts,
// attributes, subscripts (negative too), slices, calls, filters, tests, `a if c else b`,
// and/or/not, in, ~, arithmetic; the globals raise_exception, namespace and range; Python
// string and dict methods (strip, split, startswith, items, get...). Anything else is an
// error naming it, never a silent wrong rendering. Checked against minijinja's rendering
// of the same template (reference/chat-cases.json), which m2w checks against jinja2.

type Value = unknown;
type Scope = Map<string, Value>;

interface Token {
  kind: 'text' | 'expr' | 'stmt';
  value: string;
}

class TemplateError extends Error {}

/** Where the tag opened at `from` ends (the index after its closer), skipping string
 * literals, so a `}}` inside a quoted string does not close it. */
function tagEnd(src: string, from: number, closer: string): number {
  let quote = '';
  for (let i = from; i < src.length; i++) {
    const c = src[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (src.startsWith(closer, i)) return i + closer.length;
  }
  throw new TemplateError(`unclosed tag at ${JSON.stringify(src.slice(from - 2, from + 20))}`);
}

/** Splits the source into text, {{ expr }} and {% stmt %} with Jinja's whitespace rules. */
function lex(src: string): Token[] {
  const out: Token[] = [];
  let last = 0;
  let trimNext = false; // "-" before the closing delimiter of the previous tag
  let newlineNext = false; // trim_blocks after a block tag
  const open = /\{\{|\{%|\{#/g;
  let m: RegExpExecArray | null;
  while ((m = open.exec(src)) !== null) {
    const at = m.index;
    const kind = m[0];
    const closer = kind === '{{' ? '}}' : kind === '{%' ? '%}' : '#}';
    const end = kind === '{#' ? src.indexOf('#}', at + 2) + 2 : tagEnd(src, at + 2, closer);
    if (end < 2) throw new TemplateError('unclosed comment');
    let inner = src.slice(at + 2, end - 2);
    const leftDash = inner.startsWith('-');
    const rightDash = inner.endsWith('-');
    if (leftDash) inner = inner.slice(1);
    if (rightDash) inner = inner.slice(0, -1);
    let text = src.slice(last, at);
    if (trimNext) text = text.replace(/^\s+/, '');
    else if (newlineNext) text = text.replace(/^\r?\n/, '');
    const isBlock = kind !== '{{';
    if (leftDash) text = text.replace(/\s+$/, '');
    else if (isBlock) {
      // lstrip_blocks: spaces and tabs from the start of a line up to a block tag.
      let q = at;
      while (q > last && (src[q - 1] === ' ' || src[q - 1] === '\t')) q--;
      if (q === 0 || src[q - 1] === '\n') text = text.replace(/[ \t]*$/, '');
    }
    if (text) out.push({ kind: 'text', value: text });
    if (kind === '{{') out.push({ kind: 'expr', value: inner });
    else if (kind === '{%') out.push({ kind: 'stmt', value: inner.trim() });
    trimNext = rightDash;
    newlineNext = isBlock;
    last = end;
    open.lastIndex = end;
  }
  let tail = src.slice(last);
  if (trimNext) tail = tail.replace(/^\s+/, '');
  else if (newlineNext) tail = tail.replace(/^\r?\n/, '');
  if (tail) out.push({ kind: 'text', value: tail });
  return out;
}

// ---- expressions ----

type Expr =
  | { t: 'lit'; v: Value }
  | { t: 'name'; n: string }
  | { t: 'list'; items: Expr[] }
  | { t: 'dict'; items: [Expr, Expr][] }
  | { t: 'attr'; o: Expr; n: string }
  | { t: 'index'; o: Expr; i: Expr }
  | { t: 'slice'; o: Expr; a: Expr | null; b: Expr | null; s: Expr | null }
  | { t: 'call'; f: Expr; args: Expr[]; kw: [string, Expr][] }
  | { t: 'filter'; o: Expr; n: string; args: Expr[]; kw: [string, Expr][] }
  | { t: 'test'; o: Expr; n: string; args: Expr[]; neg: boolean }
  | { t: 'un'; op: string; o: Expr }
  | { t: 'bin'; op: string; a: Expr; b: Expr }
  | { t: 'cond'; c: Expr; a: Expr; b: Expr | null };

const TOKEN_RE = /\s*(?:(\d+\.\d+|\d+)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([A-Za-z_][A-Za-z0-9_]*)|(\/\/|\*\*|==|!=|<=|>=|[-+*/%~<>()[\]{}.,:|=]))/y;

function tokenize(src: string): string[] {
  const out: string[] = [];
  TOKEN_RE.lastIndex = 0;
  let at = 0;
  while (at < src.length) {
    if (/^\s*$/.test(src.slice(at))) break;
    TOKEN_RE.lastIndex = at;
    const m = TOKEN_RE.exec(src);
    if (!m) throw new TemplateError(`cannot read ${JSON.stringify(src.slice(at, at + 20))}`);
    out.push(m[1] ?? m[2] ?? m[3] ?? m[4]);
    at = TOKEN_RE.lastIndex;
  }
  return out;
}

function unquote(s: string): string {
  const body = s.slice(1, -1);
  return body.replace(/\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)/g, (_, e: string) => {
    if (e[0] === 'u' || e[0] === 'x') return String.fromCharCode(parseInt(e.slice(1), 16));
    return ({ n: '\n', t: '\t', r: '\r', '0': '\0' } as Record<string, string>)[e] ?? e;
  });
}

class Parser {
  private i = 0;
  constructor(private readonly toks: string[]) {}
  peek(k = 0): string | undefined {
    return this.toks[this.i + k];
  }
  next(): string {
    const t = this.toks[this.i++];
    if (t === undefined) throw new TemplateError('unexpected end of expression');
    return t;
  }
  eat(t: string): boolean {
    if (this.peek() === t) {
      this.i++;
      return true;
    }
    return false;
  }
  expect(t: string): void {
    const got = this.next();
    if (got !== t) throw new TemplateError(`expected '${t}', got '${got}'`);
  }
  done(): boolean {
    return this.i >= this.toks.length;
  }
  expr(): Expr {
    const a = this.or();
    if (this.eat('if')) {
      const c = this.or();
      const b = this.eat('else') ? this.expr() : null;
      return { t: 'cond', c, a, b };
    }
    return a;
  }
  or(): Expr {
    let a = this.and();
    while (this.eat('or')) a = { t: 'bin', op: 'or', a, b: this.and() };
    return a;
  }
  and(): Expr {
    let a = this.not();
    while (this.eat('and')) a = { t: 'bin', op: 'and', a, b: this.not() };
    return a;
  }
  not(): Expr {
    if (this.eat('not')) return { t: 'un', op: 'not', o: this.not() };
    return this.compare();
  }
  compare(): Expr {
    let a = this.concat();
    for (;;) {
      const p = this.peek();
      if (p === '==' || p === '!=' || p === '<' || p === '>' || p === '<=' || p === '>=') {
        this.i++;
        a = { t: 'bin', op: p, a, b: this.concat() };
      } else if (p === 'in') {
        this.i++;
        a = { t: 'bin', op: 'in', a, b: this.concat() };
      } else if (p === 'not' && this.peek(1) === 'in') {
        this.i += 2;
        a = { t: 'un', op: 'not', o: { t: 'bin', op: 'in', a, b: this.concat() } };
      } else if (p === 'is') {
        this.i++;
        const neg = this.eat('not');
        const n = this.next();
        const args: Expr[] = [];
        if (this.eat('(')) {
          while (!this.eat(')')) {
            args.push(this.expr());
            this.eat(',');
          }
        } else if (this.peek() !== undefined && /^["'\d]/.test(this.peek()!)) args.push(this.primary());
        a = { t: 'test', o: a, n, args, neg };
      } else return a;
    }
  }
  concat(): Expr {
    let a = this.add();
    while (this.eat('~')) a = { t: 'bin', op: '~', a, b: this.add() };
    return a;
  }
  add(): Expr {
    let a = this.mul();
    for (let p = this.peek(); p === '+' || p === '-'; p = this.peek()) {
      this.i++;
      a = { t: 'bin', op: p, a, b: this.mul() };
    }
    return a;
  }
  mul(): Expr {
    let a = this.unary();
    for (let p = this.peek(); p === '*' || p === '/' || p === '//' || p === '%'; p = this.peek()) {
      this.i++;
      a = { t: 'bin', op: p, a, b: this.unary() };
    }
    return a;
  }
  unary(): Expr {
    if (this.eat('-')) return { t: 'un', op: '-', o: this.unary() };
    if (this.eat('+')) return this.unary();
    return this.postfix();
  }
  args(): { args: Expr[]; kw: [string, Expr][] } {
    const args: Expr[] = [];
    const kw: [string, Expr][] = [];
    while (!this.eat(')')) {
      if (/^[A-Za-z_]/.test(this.peek() ?? '') && this.peek(1) === '=') {
        const n = this.next();
        this.i++;
        kw.push([n, this.expr()]);
      } else args.push(this.expr());
      if (!this.eat(',') && this.peek() !== ')') throw new TemplateError(`expected ',' or ')', got '${this.peek()}'`);
    }
    return { args, kw };
  }
  postfix(): Expr {
    let o = this.primary();
    for (;;) {
      if (this.eat('.')) o = { t: 'attr', o, n: this.next() };
      else if (this.eat('[')) {
        let a: Expr | null = null;
        if (this.peek() !== ':') a = this.expr();
        if (this.eat(':')) {
          const b = this.peek() === ']' || this.peek() === ':' ? null : this.expr();
          const s = this.eat(':') && this.peek() !== ']' ? this.expr() : null;
          this.expect(']');
          o = { t: 'slice', o, a, b, s };
        } else {
          this.expect(']');
          o = { t: 'index', o, i: a! };
        }
      } else if (this.eat('(')) {
        const { args, kw } = this.args();
        o = { t: 'call', f: o, args, kw };
      } else if (this.eat('|')) {
        const n = this.next();
        let args: Expr[] = [];
        let kw: [string, Expr][] = [];
        if (this.eat('(')) ({ args, kw } = this.args());
        o = { t: 'filter', o, n, args, kw };
      } else return o;
    }
  }
  primary(): Expr {
    const t = this.next();
    if (/^\d/.test(t)) return { t: 'lit', v: Number(t) };
    if (t[0] === '"' || t[0] === "'") {
      let s = unquote(t);
      // Adjacent string literals concatenate.
      while (this.peek() !== undefined && /^["']/.test(this.peek()!)) s += unquote(this.next());
      return { t: 'lit', v: s };
    }
    if (t === '(') {
      const e = this.expr();
      if (this.eat(',')) {
        const items = [e];
        while (!this.eat(')')) {
          items.push(this.expr());
          this.eat(',');
        }
        return { t: 'list', items };
      }
      this.expect(')');
      return e;
    }
    if (t === '[') {
      const items: Expr[] = [];
      while (!this.eat(']')) {
        items.push(this.expr());
        this.eat(',');
      }
      return { t: 'list', items };
    }
    if (t === '{') {
      const items: [Expr, Expr][] = [];
      while (!this.eat('}')) {
        const k = this.expr();
        this.expect(':');
        items.push([k, this.expr()]);
        this.eat(',');
      }
      return { t: 'dict', items };
    }
    if (t === 'true' || t === 'True') return { t: 'lit', v: true };
    if (t === 'false' || t === 'False') return { t: 'lit', v: false };
    if (t === 'none' || t === 'None') return { t: 'lit', v: null };
    if (/^[A-Za-z_]/.test(t)) return { t: 'name', n: t };
    throw new TemplateError(`unexpected '${t}'`);
  }
}

function parseExpr(src: string): Expr {
  const p = new Parser(tokenize(src));
  const e = p.expr();
  if (!p.done()) throw new TemplateError(`unexpected '${p.peek()}' in ${JSON.stringify(src)}`);
  return e;
}

// ---- statements ----

type Node =
  | { t: 'text'; v: string }
  | { t: 'out'; e: Expr }
  | { t: 'if'; branches: [Expr, Node[]][]; otherwise: Node[] }
  | { t: 'for'; names: string[]; iter: Expr; cond: Expr | null; body: Node[]; otherwise: Node[] }
  | { t: 'set'; target: string[]; e: Expr }
  | { t: 'break' }
  | { t: 'continue' };

function parseTemplate(tokens: Token[]): Node[] {
  let i = 0;
  const block = (ends: string[]): [Node[], string] => {
    const body: Node[] = [];
    while (i < tokens.length) {
      const tok = tokens[i++];
      if (tok.kind === 'text') body.push({ t: 'text', v: tok.value });
      else if (tok.kind === 'expr') body.push({ t: 'out', e: parseExpr(tok.value) });
      else {
        const word = tok.value.split(/\s+/)[0];
        if (ends.includes(word)) return [body, tok.value];
        const rest = tok.value.slice(word.length).trim();
        if (word === 'if') {
          const branches: [Expr, Node[]][] = [];
          let cond = parseExpr(rest);
          let otherwise: Node[] = [];
          for (;;) {
            const [b, end] = block(['elif', 'else', 'endif']);
            branches.push([cond, b]);
            if (end.startsWith('elif')) cond = parseExpr(end.slice(4));
            else {
              if (end === 'else') [otherwise] = block(['endif']);
              break;
            }
          }
          body.push({ t: 'if', branches, otherwise });
        } else if (word === 'for') {
          const m = /^([\w\s,]+?)\s+in\s+([\s\S]+)$/.exec(rest);
          if (!m) throw new TemplateError(`cannot read {% for ${rest} %}`);
          const names = m[1].split(',').map((s) => s.trim());
          const p = new Parser(tokenize(m[2]));
          const iter = p.or();
          const cond = p.eat('if') ? p.expr() : null;
          if (!p.done()) throw new TemplateError(`cannot read {% for ${rest} %}`);
          const [b, end] = block(['else', 'endfor']);
          const otherwise = end === 'else' ? block(['endfor'])[0] : [];
          body.push({ t: 'for', names, iter, cond, body: b, otherwise });
        } else if (word === 'set') {
          const eq = rest.indexOf('=');
          if (eq < 0) throw new TemplateError('block {% set %} is not supported');
          body.push({ t: 'set', target: rest.slice(0, eq).trim().split('.'), e: parseExpr(rest.slice(eq + 1)) });
        } else if (word === 'break' || word === 'continue') body.push({ t: word });
        else throw new TemplateError(`{% ${word} %} is not supported`);
      }
    }
    if (ends.length > 0) throw new TemplateError(`missing {% ${ends[ends.length - 1]} %}`);
    return [body, ''];
  };
  return block([])[0];
}

// ---- evaluation ----

const isMapping = (v: Value): v is Record<string, Value> => typeof v === 'object' && v !== null && !Array.isArray(v);

function truthy(v: Value): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (isMapping(v)) return Object.keys(v).length > 0;
  return !!v;
}

function str(v: Value): string {
  if (v === undefined || v === null) return v === null ? 'None' : '';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return toJson(v);
}

/** Python's json.dumps(v, ensure_ascii=False, indent=indent), what Hugging Face's `tojson`
 * is: ", " and ": " between items (",\n" when indented), keys in insertion order. */
function toJson(v: Value, indent?: number, level = 0): string {
  if (v === undefined || v === null) return 'null';
  if (typeof v === 'boolean' || typeof v === 'number') return JSON.stringify(v) ?? 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  const nl = indent === undefined ? '' : '\n' + ' '.repeat(indent * (level + 1));
  const close = indent === undefined ? '' : '\n' + ' '.repeat(indent * level);
  const sep = indent === undefined ? ', ' : ',';
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return '[' + v.map((x) => nl + toJson(x, indent, level + 1)).join(sep) + close + ']';
  }
  if (v instanceof Namespace) return toJson(v.attrs, indent, level);
  const entries = Object.entries(v as Record<string, Value>);
  if (entries.length === 0) return '{}';
  return '{' + entries.map(([k, x]) => nl + JSON.stringify(k) + ': ' + toJson(x, indent, level + 1)).join(sep) + close + '}';
}

function equal(a: Value, b: Value): boolean {
  if (a === undefined) a = null;
  if (b === undefined) b = null;
  if (Array.isArray(a) || isMapping(a)) return JSON.stringify(a) === JSON.stringify(b);
  return a === b;
}

function pyIndex(len: number, i: number): number {
  return i < 0 ? len + i : i;
}

class Loop {
  constructor(readonly index0: number, readonly length: number, readonly previtem: Value, readonly nextitem: Value) {}
  get index() { return this.index0 + 1; }
  get first() { return this.index0 === 0; }
  get last() { return this.index0 === this.length - 1; }
  get revindex() { return this.length - this.index0; }
  get revindex0() { return this.length - this.index0 - 1; }
}

class Namespace {
  constructor(readonly attrs: Record<string, Value>) {}
}

class Break {}
class Continue {}

function method(o: Value, name: string, args: Value[]): Value {
  if (typeof o === 'string') {
    const chars = args[0] === undefined || args[0] === null ? null : String(args[0]);
    const strip = (s: string, left: boolean, right: boolean): string => {
      const set = chars ?? ' \t\n\r\x0b\x0c';
      let a = 0;
      let b = s.length;
      if (left) while (a < b && set.includes(s[a])) a++;
      if (right) while (b > a && set.includes(s[b - 1])) b--;
      return s.slice(a, b);
    };
    switch (name) {
      case 'strip': return strip(o, true, true);
      case 'lstrip': return strip(o, true, false);
      case 'rstrip': return strip(o, false, true);
      case 'upper': return o.toUpperCase();
      case 'lower': return o.toLowerCase();
      case 'startswith': return o.startsWith(String(args[0]));
      case 'endswith': return o.endsWith(String(args[0]));
      case 'replace': return o.split(String(args[0])).join(String(args[1]));
      case 'split': {
        if (args[0] === undefined || args[0] === null) return o.split(/\s+/).filter((s) => s.length > 0);
        return o.split(String(args[0]));
      }
      case 'find': return o.indexOf(String(args[0]));
      case 'title': return o.replace(/\w\S*/g, (w) => w[0].toUpperCase() + w.slice(1).toLowerCase());
      case 'capitalize': return o ? o[0].toUpperCase() + o.slice(1).toLowerCase() : o;
    }
  }
  if (isMapping(o)) {
    switch (name) {
      case 'items': return Object.entries(o);
      case 'keys': return Object.keys(o);
      case 'values': return Object.values(o);
      case 'get': {
        const k = str(args[0]);
        return k in o ? o[k] : (args[1] ?? null);
      }
    }
  }
  throw new TemplateError(`unknown method ${name} on ${typeof o}`);
}

function filter(name: string, v: Value, args: Value[], kw: Record<string, Value>): Value {
  switch (name) {
    case 'trim': return str(v).trim();
    case 'length':
    case 'count': return Array.isArray(v) || typeof v === 'string' ? v.length : isMapping(v) ? Object.keys(v).length : 0;
    case 'upper': return str(v).toUpperCase();
    case 'lower': return str(v).toLowerCase();
    case 'string': return str(v);
    case 'int': return Math.trunc(Number(v)) || 0;
    case 'float': return Number(v) || 0;
    case 'list': return Array.isArray(v) ? v : typeof v === 'string' ? [...v] : isMapping(v) ? Object.keys(v) : [];
    case 'first': return Array.isArray(v) ? v[0] : typeof v === 'string' ? v[0] : undefined;
    case 'last': return Array.isArray(v) ? v[v.length - 1] : typeof v === 'string' ? v[v.length - 1] : undefined;
    case 'join': return (v as Value[]).map(str).join(args[0] === undefined ? '' : str(args[0]));
    case 'default': return v === undefined || (args[1] === true && !truthy(v)) ? args[0] : v;
    case 'items': return Object.entries(v as object);
    case 'reverse': return Array.isArray(v) ? [...v].reverse() : [...str(v)].reverse().join('');
    case 'safe': return v;
    case 'capitalize': return method(str(v), 'capitalize', []);
    case 'replace': return str(v).split(str(args[0])).join(str(args[1]));
    case 'tojson': return toJson(v, (kw.indent as number | undefined) ?? (args[0] as number | undefined));
    case 'map': {
      const attribute = kw.attribute as string | undefined;
      if (attribute !== undefined) return (v as Value[]).map((x) => (x as Record<string, Value>)[attribute]);
      return (v as Value[]).map((x) => filter(str(args[0]), x, args.slice(1), {}));
    }
    case 'selectattr':
    case 'rejectattr': {
      const keep = name === 'selectattr';
      return (v as Value[]).filter((x) => {
        const a = (x as Record<string, Value>)[str(args[0])];
        const ok = args.length > 1 ? test(str(args[1]), a, args.slice(2)) : truthy(a);
        return ok === keep;
      });
    }
  }
  throw new TemplateError(`filter ${name} is not supported`);
}

function test(name: string, v: Value, args: Value[]): boolean {
  switch (name) {
    case 'string': return typeof v === 'string';
    case 'number': return typeof v === 'number';
    case 'integer': return Number.isInteger(v);
    case 'boolean': return typeof v === 'boolean';
    case 'mapping': return isMapping(v);
    case 'iterable': return typeof v === 'string' || Array.isArray(v) || isMapping(v);
    case 'sequence': return typeof v === 'string' || Array.isArray(v);
    case 'defined': return v !== undefined;
    case 'undefined': return v === undefined;
    case 'none': return v === null;
    case 'true': return v === true;
    case 'false': return v === false;
    case 'even': return (v as number) % 2 === 0;
    case 'odd': return (v as number) % 2 === 1;
    case 'equalto':
    case 'eq':
    case '==': return equal(v, args[0]);
    case 'in': return truthy(contains(args[0], v));
  }
  throw new TemplateError(`test ${name} is not supported`);
}

function contains(hay: Value, needle: Value): boolean {
  if (typeof hay === 'string') return hay.includes(str(needle));
  if (Array.isArray(hay)) return hay.some((x) => equal(x, needle));
  if (isMapping(hay)) return str(needle) in hay;
  return false;
}

function lookup(scopes: Scope[], name: string): Value {
  for (let i = scopes.length - 1; i >= 0; i--) if (scopes[i].has(name)) return scopes[i].get(name);
  return undefined;
}

function evaluate(e: Expr, scopes: Scope[]): Value {
  switch (e.t) {
    case 'lit': return e.v;
    case 'name': return lookup(scopes, e.n);
    case 'list': return e.items.map((x) => evaluate(x, scopes));
    case 'dict': return Object.fromEntries(e.items.map(([k, v]) => [str(evaluate(k, scopes)), evaluate(v, scopes)]));
    case 'attr': {
      const o = evaluate(e.o, scopes);
      if (o instanceof Loop || o instanceof Namespace) return o instanceof Namespace ? o.attrs[e.n] : (o as unknown as Record<string, Value>)[e.n];
      if (isMapping(o)) return o[e.n];
      return undefined;
    }
    case 'index': {
      const o = evaluate(e.o, scopes);
      const i = evaluate(e.i, scopes);
      if (Array.isArray(o) || typeof o === 'string') return o[pyIndex(o.length, i as number)];
      if (isMapping(o)) return o[str(i)];
      if (o instanceof Namespace) return o.attrs[str(i)];
      return undefined;
    }
    case 'slice': {
      const o = evaluate(e.o, scopes) as Value[] | string;
      const len = o.length;
      const step = e.s ? (evaluate(e.s, scopes) as number) : 1;
      const clamp = (x: number) => Math.max(0, Math.min(len, pyIndex(len, x)));
      if (step === 1) {
        const a = e.a ? clamp(evaluate(e.a, scopes) as number) : 0;
        const b = e.b ? clamp(evaluate(e.b, scopes) as number) : len;
        return o.slice(a, Math.max(a, b));
      }
      const items = typeof o === 'string' ? [...o] : [...o];
      const picked: Value[] = [];
      if (step < 0) {
        const a = e.a ? Math.min(len - 1, pyIndex(len, evaluate(e.a, scopes) as number)) : len - 1;
        const b = e.b ? pyIndex(len, evaluate(e.b, scopes) as number) : -1;
        for (let i = a; i > b; i += step) picked.push(items[i]);
      } else {
        const a = e.a ? clamp(evaluate(e.a, scopes) as number) : 0;
        const b = e.b ? clamp(evaluate(e.b, scopes) as number) : len;
        for (let i = a; i < b; i += step) picked.push(items[i]);
      }
      return typeof o === 'string' ? picked.join('') : picked;
    }
    case 'call': {
      const args = e.args.map((x) => evaluate(x, scopes));
      const kw = Object.fromEntries(e.kw.map(([k, v]) => [k, evaluate(v, scopes)]));
      if (e.f.t === 'attr') return method(evaluate(e.f.o, scopes), e.f.n, args);
      if (e.f.t === 'name') {
        if (e.f.n === 'raise_exception') throw new TemplateError(str(args[0]));
        if (e.f.n === 'namespace') return new Namespace({ ...kw });
        if (e.f.n === 'range') {
          const [a, b, s] = args.length === 1 ? [0, args[0] as number, 1] : [args[0] as number, args[1] as number, (args[2] as number) ?? 1];
          const out: number[] = [];
          for (let i = a; s > 0 ? i < b : i > b; i += s) out.push(i);
          return out;
        }
        const f = lookup(scopes, e.f.n);
        if (typeof f === 'function') return (f as (...a: Value[]) => Value)(...args);
      }
      throw new TemplateError('unknown function call');
    }
    case 'filter':
      return filter(e.n, evaluate(e.o, scopes), e.args.map((x) => evaluate(x, scopes)), Object.fromEntries(e.kw.map(([k, v]) => [k, evaluate(v, scopes)])));
    case 'test': {
      const r = test(e.n, evaluate(e.o, scopes), e.args.map((x) => evaluate(x, scopes)));
      return e.neg ? !r : r;
    }
    case 'un': {
      const v = evaluate(e.o, scopes);
      return e.op === 'not' ? !truthy(v) : -(v as number);
    }
    case 'bin': {
      if (e.op === 'and') {
        const a = evaluate(e.a, scopes);
        return truthy(a) ? evaluate(e.b, scopes) : a;
      }
      if (e.op === 'or') {
        const a = evaluate(e.a, scopes);
        return truthy(a) ? a : evaluate(e.b, scopes);
      }
      const a = evaluate(e.a, scopes);
      const b = evaluate(e.b, scopes);
      switch (e.op) {
        case '==': return equal(a, b);
        case '!=': return !equal(a, b);
        case '<': return (a as number) < (b as number);
        case '>': return (a as number) > (b as number);
        case '<=': return (a as number) <= (b as number);
        case '>=': return (a as number) >= (b as number);
        case 'in': return contains(b, a);
        case '~': return str(a) + str(b);
        case '+':
          if (typeof a === 'string' || typeof b === 'string') {
            if (typeof a !== 'string' || typeof b !== 'string') throw new TemplateError('cannot add a string and a non-string');
            return a + b;
          }
          if (Array.isArray(a) && Array.isArray(b)) return [...a, ...b];
          return (a as number) + (b as number);
        case '-': return (a as number) - (b as number);
        case '*': return typeof a === 'string' ? a.repeat(b as number) : (a as number) * (b as number);
        case '/': return (a as number) / (b as number);
        case '//': return Math.floor((a as number) / (b as number));
        case '%': {
          const m = (a as number) % (b as number);
          return m !== 0 && (m < 0) !== ((b as number) < 0) ? m + (b as number) : m;
        }
      }
      throw new TemplateError(`operator ${e.op}`);
    }
    case 'cond':
      return truthy(evaluate(e.c, scopes)) ? evaluate(e.a, scopes) : e.b ? evaluate(e.b, scopes) : undefined;
  }
}

function run(nodes: Node[], scopes: Scope[], out: string[]): void {
  for (const n of nodes) {
    switch (n.t) {
      case 'text': out.push(n.v); break;
      case 'out': out.push(str(evaluate(n.e, scopes))); break;
      case 'if': {
        const hit = n.branches.find(([c]) => truthy(evaluate(c, scopes)));
        run(hit ? hit[1] : n.otherwise, scopes, out);
        break;
      }
      case 'for': {
        let items = evaluate(n.iter, scopes);
        if (isMapping(items)) items = Object.keys(items);
        if (typeof items === 'string') items = [...items];
        let list = (items ?? []) as Value[];
        const bind = (scope: Scope, item: Value) => {
          if (n.names.length === 1) scope.set(n.names[0], item);
          else n.names.forEach((name, k) => scope.set(name, (item as Value[])[k]));
        };
        if (n.cond) {
          list = list.filter((item) => {
            const s: Scope = new Map();
            bind(s, item);
            return truthy(evaluate(n.cond!, [...scopes, s]));
          });
        }
        if (list.length === 0) run(n.otherwise, scopes, out);
        for (let k = 0; k < list.length; k++) {
          const scope: Scope = new Map();
          bind(scope, list[k]);
          scope.set('loop', new Loop(k, list.length, list[k - 1], list[k + 1]));
          try {
            run(n.body, [...scopes, scope], out);
          } catch (x) {
            if (x instanceof Break) break;
            if (x instanceof Continue) continue;
            throw x;
          }
        }
        break;
      }
      case 'set': {
        const v = evaluate(n.e, scopes);
        if (n.target.length === 1) scopes[scopes.length - 1].set(n.target[0], v);
        else {
          const ns = lookup(scopes, n.target[0]);
          if (!(ns instanceof Namespace)) throw new TemplateError(`${n.target[0]} is not a namespace`);
          ns.attrs[n.target[1]] = v;
        }
        break;
      }
      case 'break': throw new Break();
      case 'continue': throw new Continue();
    }
  }
}

/** A parsed chat template. */
export class ChatTemplate {
  private readonly nodes: Node[];
  constructor(source: string) {
    this.nodes = parseTemplate(lex(source));
  }

  /** Renders `context` (messages, add_generation_prompt, bos_token, ...). */
  render(context: Record<string, unknown>): string {
    const out: string[] = [];
    run(this.nodes, [new Map(Object.entries(context))], out);
    return out.join('');
  }
}
