//! Errors that name the file, line and column, as a compiler's do.

use std::fmt;

use super::ast::Span;

/// A mistake in a script, found before it runs (or a construct synack does not run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub file: String,
    pub span: Span,
    pub message: String,
}

impl ScriptError {
    pub fn at(file: &str, span: Span, message: impl Into<String>) -> Self {
        ScriptError {
            file: file.to_owned(),
            span,
            message: message.into(),
        }
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.span.line, self.span.col, self.message
        )
    }
}

impl std::error::Error for ScriptError {}
