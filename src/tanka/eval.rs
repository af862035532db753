//! Jsonnet evaluation with Tanka's import paths, on `rsjsonnet-lang` (docs/design.md says why
//! that crate). Reads the project's files and nothing else; writes nothing.
//!
//! Import resolution follows jsonnet and Tanka: a path is first looked up relative to the
//! importing file's directory, then along Tanka's jpath, most specific first: the
//! environment directory (the one holding `main.jsonnet`), `<root>/lib`,
//! `<root>/<environment>/vendor`, `<root>/vendor` (Tanka's `pkg/jsonnet/jpath`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rsjsonnet_lang::arena::Arena;
use rsjsonnet_lang::interner::InternedStr;
use rsjsonnet_lang::lexer::LexError;
use rsjsonnet_lang::parser::ParseError;
use rsjsonnet_lang::program::{
    AnalyzeError, Callbacks, EvalError, EvalErrorKind, EvalStackTraceItem, ImportError, LoadError,
    NativeError, Program, Thunk, Value,
};
use rsjsonnet_lang::span::{SpanContextId, SpanId};

use super::TankaError;

/// Where a jsonnet error happened: file, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// The directories an import is searched in after the importing file's own, in order.
pub fn jpath(root: &Path, env_dir: &Path) -> Vec<PathBuf> {
    vec![
        env_dir.to_path_buf(),
        root.join("lib"),
        env_dir.join("vendor"),
        root.join("vendor"),
    ]
}

/// A source file loaded into the program.
struct Source {
    path: PathBuf,
    text: Vec<u8>,
}

/// An import that found nothing: what `super::missing_import` turns into an error.
pub struct MissingImport {
    pub importer: Location,
    pub path: String,
    pub searched: Vec<PathBuf>,
}

struct Importer<'p> {
    jpath: Vec<PathBuf>,
    sources: Vec<Source>,
    contexts: HashMap<SpanContextId, usize>,
    loaded: HashMap<PathBuf, Thunk<'p>>,
    /// The first import that failed and why; rsjsonnet's `ImportError` carries nothing.
    failure: Option<TankaError>,
    missing: Option<MissingImport>,
}

impl<'p> Importer<'p> {
    fn location(&self, program: &Program<'p>, span: SpanId) -> Option<Location> {
        let (ctx, start, _) = program.span_manager().get_span(span);
        let source = &self.sources[*self.contexts.get(&ctx)?];
        let before = &source.text[..start.min(source.text.len())];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        Some(Location {
            file: source.path.clone(),
            line,
            column,
        })
    }

    /// The file an import names, searched as jsonnet and Tanka do; None when nothing is there.
    fn find(&self, importer: &Path, path: &str) -> (Option<PathBuf>, Vec<PathBuf>) {
        let mut searched = Vec::new();
        let candidates = if Path::new(path).is_absolute() {
            vec![PathBuf::from(path)]
        } else {
            let own = importer.parent().unwrap_or(Path::new(".")).to_path_buf();
            std::iter::once(own)
                .chain(self.jpath.iter().cloned())
                .map(|d| d.join(path))
                .collect()
        };
        for c in candidates {
            if c.is_file() {
                return (Some(c), searched);
            }
            searched.push(c);
        }
        (None, searched)
    }

    fn resolve(
        &mut self,
        program: &Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<PathBuf, ImportError> {
        let importer = self.location(program, from).ok_or(ImportError)?;
        let (found, searched) = self.find(&importer.file, path);
        match found {
            Some(f) => Ok(f),
            None => {
                if self.missing.is_none() && self.failure.is_none() {
                    self.missing = Some(MissingImport {
                        importer,
                        path: path.to_string(),
                        searched,
                    });
                }
                Err(ImportError)
            }
        }
    }

    fn read(&mut self, file: &Path) -> Result<Vec<u8>, ImportError> {
        std::fs::read(file).map_err(|e| {
            self.failure.get_or_insert(TankaError::Read {
                file: file.to_path_buf(),
                message: e.to_string(),
            });
            ImportError
        })
    }

    /// Load `file` as jsonnet (once per file, as jsonnet caches imports).
    fn load(&mut self, program: &mut Program<'p>, file: &Path) -> Result<Thunk<'p>, ImportError> {
        if let Some(t) = self.loaded.get(file) {
            return Ok(t.clone());
        }
        let text = self.read(file)?;
        let (ctx, _) = program.span_manager_mut().insert_source_context(text.len());
        self.contexts.insert(ctx, self.sources.len());
        self.sources.push(Source {
            path: file.to_path_buf(),
            text: text.clone(),
        });
        let name = file.display().to_string();
        match program.load_source(ctx, &text, true, &name) {
            Ok(thunk) => {
                self.loaded.insert(file.to_path_buf(), thunk.clone());
                Ok(thunk)
            }
            Err(e) => {
                let (span, message) = load_error(&e);
                let at = self.location(program, span);
                self.failure.get_or_insert(jsonnet_error(file, at, message));
                Err(ImportError)
            }
        }
    }
}

fn jsonnet_error(file: &Path, at: Option<Location>, message: String) -> TankaError {
    let at = at.unwrap_or(Location {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
    });
    TankaError::Jsonnet { at, message }
}

impl<'p> Callbacks<'p> for Importer<'p> {
    fn import(
        &mut self,
        program: &mut Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<Thunk<'p>, ImportError> {
        let file = self.resolve(program, from, path)?;
        self.load(program, &file)
    }

    fn import_str(
        &mut self,
        program: &mut Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<String, ImportError> {
        let file = self.resolve(program, from, path)?;
        let bytes = self.read(&file)?;
        String::from_utf8(bytes).map_err(|_| {
            self.failure.get_or_insert(TankaError::Read {
                file: file.clone(),
                message: "importstr needs UTF-8 text".into(),
            });
            ImportError
        })
    }

    fn import_bin(
        &mut self,
        program: &mut Program<'p>,
        from: SpanId,
        path: &str,
    ) -> Result<Vec<u8>, ImportError> {
        let file = self.resolve(program, from, path)?;
        self.read(&file)
    }

    fn trace(&mut self, _program: &mut Program<'p>, message: &str, _: &[EvalStackTraceItem]) {
        tracing::info!(target: "sparkgap::tanka", "std.trace: {message}");
    }

    fn native_call(
        &mut self,
        _program: &mut Program<'p>,
        _name: InternedStr<'p>,
        _args: &[Value<'p>],
    ) -> Result<Value<'p>, NativeError> {
        // No native functions are registered (Tanka's helmTemplate & co. are not offered).
        Err(NativeError)
    }
}

/// What evaluation of one file failed on, before the caller adds Tanka context.
pub enum Failure {
    Error(TankaError),
    Missing(MissingImport),
}

/// Evaluate `main` (with `jpath` after its own directory) to JSON.
pub fn evaluate(main: &Path, jpath: Vec<PathBuf>) -> Result<serde_json::Value, Failure> {
    let arena = Arena::new();
    let mut program = Program::new(&arena);
    let mut imp = Importer {
        jpath,
        sources: Vec::new(),
        contexts: HashMap::new(),
        loaded: HashMap::new(),
        failure: None,
        missing: None,
    };
    let fail = |imp: &mut Importer<'_>, fallback: TankaError| {
        if let Some(e) = imp.failure.take() {
            Failure::Error(e)
        } else if let Some(m) = imp.missing.take() {
            Failure::Missing(m)
        } else {
            Failure::Error(fallback)
        }
    };
    let thunk = match imp.load(&mut program, main) {
        Ok(t) => t,
        Err(ImportError) => {
            let fallback = TankaError::Read {
                file: main.to_path_buf(),
                message: "cannot load".into(),
            };
            return Err(fail(&mut imp, fallback));
        }
    };
    let result = program
        .eval_value(&thunk, &mut imp)
        .and_then(|v| program.manifest_json(&v, false));
    match result {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            Failure::Error(TankaError::Read {
                file: main.to_path_buf(),
                message: format!("evaluated to JSON that does not parse back: {e}"),
            })
        }),
        Err(e) => {
            let (span, message) = describe(&e.kind);
            let at = span
                .and_then(|s| imp.location(&program, s))
                .or_else(|| eval_span(&e, |s| imp.location(&program, s)));
            let fallback = jsonnet_error(main, at, message);
            Err(fail(&mut imp, fallback))
        }
    }
}

/// The innermost place in a user's file the error points at: the stack trace runs from the
/// failing expression outwards; spans in the standard library have no file of ours and are
/// skipped by `location`.
fn eval_span(e: &EvalError, locate: impl Fn(SpanId) -> Option<Location>) -> Option<Location> {
    let span = |item: &EvalStackTraceItem| match item {
        EvalStackTraceItem::Expr { span }
        | EvalStackTraceItem::Variable { span, .. }
        | EvalStackTraceItem::Import { span } => Some(*span),
        EvalStackTraceItem::Call { span, .. }
        | EvalStackTraceItem::ArrayItem { span, .. }
        | EvalStackTraceItem::ObjectField { span, .. } => *span,
        _ => None,
    };
    e.stack_trace
        .iter()
        .find_map(|item| span(item).and_then(&locate))
}

/// The message for an evaluation error, and the span it names when it names one.
fn describe(kind: &EvalErrorKind) -> (Option<SpanId>, String) {
    match kind {
        EvalErrorKind::ExplicitError { message, span } => {
            (Some(*span), format!("error: {message}"))
        }
        EvalErrorKind::AssertFailed { message, span } => (
            Some(*span),
            format!(
                "assertion failed{}",
                message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        ),
        EvalErrorKind::UnknownObjectField { field_name, span } => {
            (Some(*span), format!("field {field_name:?} does not exist"))
        }
        EvalErrorKind::ImportFailed { path, span } => {
            (Some(*span), format!("cannot import {path:?}"))
        }
        EvalErrorKind::UnknownExtVar { name, .. } => (
            None,
            format!("external variable {name:?} is not defined (sparkgap passes none)"),
        ),
        EvalErrorKind::Other { message, span } => (*span, message.clone()),
        other => {
            // The variants without their own text read well enough in Debug form once the
            // span ids (meaningless to a user; the location is given separately) are gone.
            (None, strip_spans(&format!("{other:?}")))
        }
    }
}

fn strip_spans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("span: ") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let end = after.find(", ").map(|j| j + 2).or_else(|| after.find(" }"));
        match end {
            Some(j) => rest = &after[j..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn load_error(e: &LoadError) -> (SpanId, String) {
    match e {
        LoadError::Lex(l) => (
            lex_span(l),
            format!("syntax error: {}", strip_spans(&format!("{l:?}"))),
        ),
        LoadError::Parse(ParseError::Expected {
            span,
            expected,
            instead,
        }) => (
            *span,
            format!(
                "syntax error: expected one of {}, found {}",
                token_text(&format!("{expected:?}")),
                token_text(&format!("{instead:?}"))
            ),
        ),
        LoadError::Analyze(a) => (analyze_span(a), strip_spans(&format!("{a:?}"))),
    }
}

/// `{Simple(Assert), Ident}` → `{Assert, Ident}`: the parser's token names without their
/// wrapper.
fn token_text(debug: &str) -> String {
    debug.replace("Simple(", "").replace(')', "")
}

fn lex_span(e: &LexError) -> SpanId {
    match e {
        LexError::InvalidChar { span, .. }
        | LexError::InvalidUtf8 { span, .. }
        | LexError::UnfinishedMultilineComment { span }
        | LexError::LeadingZeroInNumber { span }
        | LexError::MissingFracDigits { span }
        | LexError::MissingExpDigits { span }
        | LexError::MissingDigitAfterUnderscore { span }
        | LexError::ExpOverflow { span }
        | LexError::InvalidEscapeInString { span, .. }
        | LexError::IncompleteUnicodeEscape { span }
        | LexError::InvalidUtf16EscapeSequence { span, .. }
        | LexError::UnfinishedString { span }
        | LexError::MissingLineBreakAfterTextBlockStart { span }
        | LexError::MissingWhitespaceTextBlockStart { span }
        | LexError::InvalidTextBlockTermination { span } => *span,
    }
}

fn analyze_span(e: &AnalyzeError) -> SpanId {
    match e {
        AnalyzeError::UnknownVariable { span, .. }
        | AnalyzeError::SelfOutsideObject { self_span: span }
        | AnalyzeError::SuperOutsideObject { super_span: span }
        | AnalyzeError::DollarOutsideObject { dollar_span: span }
        | AnalyzeError::RepeatedLocalName {
            repeated_span: span,
            ..
        }
        | AnalyzeError::RepeatedFieldName {
            repeated_span: span,
            ..
        }
        | AnalyzeError::RepeatedParamName {
            repeated_span: span,
            ..
        }
        | AnalyzeError::PositionalArgAfterNamed { arg_span: span }
        | AnalyzeError::TextBlockAsImportPath { span }
        | AnalyzeError::ComputedImportPath { span } => *span,
    }
}
