//! Bounds on a JSON schema before llama.cpp turns it into a grammar (`response_format`, and a
//! tool's `parameters` when a forced call decodes under them). llama.cpp's converter and its
//! grammar engine do work that grows faster than the schema: the converter copies the list of
//! an object's optional properties once per property per property (cubic), recursing once per
//! optional property (6,000 of them overflowed a worker's stack and aborted it); every optional
//! property, `anyOf` branch and `enum` value is a parse stack that every vocabulary entry is
//! checked against at each token; a repetition count (`maxLength`, `{m,n}` in a `pattern`) is
//! copied out that many times. So orcd and the worker both refuse, before any grammar is built,
//! a schema past any of the limits below, naming the limit and where in the schema it was hit.
//!
//! Regular expressions in `pattern` are parsed (not compiled) with `regex-syntax`: an invalid
//! one is refused, and so is a valid one that llama.cpp's converter would not turn into the same
//! language (it widens an unanchored or unsupported pattern to "any string" without a word).

use regex_syntax::ast::{
    self, Ast, ClassSet, ClassSetItem, GroupKind, LiteralKind, RepetitionKind, RepetitionRange,
    SpecialLiteralKind,
};
use serde_json::Value;

/// Deepest nesting of subschemas (OpenAI's structured outputs allow 10 levels).
pub const MAX_SCHEMA_DEPTH: usize = 10;
/// Most properties in one schema, all objects together.
pub const MAX_SCHEMA_PROPERTIES: usize = 1000;
/// Most properties one object may leave out of `required`: llama.cpp's converter does work
/// cubic in this number (see `cargo xtask bench --schema-sizes`).
pub const MAX_OPTIONAL_PROPERTIES: usize = 64;
/// Most branches of one `anyOf`, `oneOf` or `allOf`, or types in one `type` list.
pub const MAX_SCHEMA_ALTERNATIVES: usize = 64;
/// Most `enum` values in one schema, all enums together.
pub const MAX_ENUM_VALUES: usize = 1000;
/// Largest repetition count: `minLength`, `maxLength`, `minItems`, `maxItems`,
/// `minProperties`, `maxProperties`, and `{m,n}` in a `pattern`.
pub const MAX_REPETITION: u64 = 1000;
/// Largest grammar a schema may expand into, counted in grammar items (one per subschema,
/// property, enum value and repeated copy; a pattern's repetitions multiply).
pub const MAX_GRAMMAR_ITEMS: u64 = 50_000;
/// Deepest group nesting in a `pattern`.
pub const MAX_PATTERN_NESTING: u32 = 32;

/// Longest schema key repeated back in an error: keys are the client's text.
const MAX_KEY_CHARS: usize = 64;

/// Why a schema was refused; `at` is where in the schema, as a JSON pointer (`/properties/a`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    #[error("at `{at}`, subschemas nest deeper than {MAX_SCHEMA_DEPTH} levels")]
    TooDeep { at: String },
    #[error("at `{at}`, the schema has more than {MAX_SCHEMA_PROPERTIES} properties in all")]
    TooManyProperties { at: String },
    #[error(
        "at `{at}`, an object has {count} optional properties; the limit is \
         {MAX_OPTIONAL_PROPERTIES} (list more of them in `required`)"
    )]
    TooManyOptionalProperties { at: String, count: usize },
    #[error("at `{at}`, {count} alternatives; the limit is {MAX_SCHEMA_ALTERNATIVES}")]
    TooManyAlternatives { at: String, count: usize },
    #[error("at `{at}`, the schema has more than {MAX_ENUM_VALUES} `enum` values in all")]
    TooManyEnumValues { at: String },
    #[error("at `{at}`, the count {value} is over the limit of {MAX_REPETITION}")]
    RepetitionTooLarge { at: String, value: String },
    #[error(
        "at `{at}`, the schema would expand into more than {MAX_GRAMMAR_ITEMS} grammar items \
         (repetition counts, properties and enum values add up)"
    )]
    GrammarTooLarge { at: String },
    #[error("at `{at}`, `pattern` must be a string")]
    PatternNotString { at: String },
    #[error("at `{at}`, `pattern` is not a valid regular expression: {message}")]
    InvalidPattern { at: String, message: String },
    #[error(
        "at `{at}`, `pattern` uses {what}, which the grammar cannot follow exactly; supported \
         are patterns anchored with `^` and `$`, literals, `.`, `[...]` classes, groups, `|` \
         and repetitions"
    )]
    UnsupportedPattern { at: String, what: &'static str },
    #[error("at `{at}`, `$ref` must point inside the schema (`#/...`)")]
    NonLocalRef { at: String },
}

/// Checks one schema against every limit.
pub fn check_schema(schema: &Value) -> Result<(), SchemaError> {
    let mut walk = Walk::default();
    walk.schema(schema, "", 0)
}

/// Running totals over one schema.
#[derive(Default)]
struct Walk {
    properties: usize,
    enum_values: usize,
    grammar_items: u64,
}

impl Walk {
    fn add_items(&mut self, items: u64, at: &str) -> Result<(), SchemaError> {
        self.grammar_items = self.grammar_items.saturating_add(items);
        if self.grammar_items > MAX_GRAMMAR_ITEMS {
            return Err(SchemaError::GrammarTooLarge { at: pointer(at) });
        }
        Ok(())
    }

    fn schema(&mut self, schema: &Value, at: &str, depth: usize) -> Result<(), SchemaError> {
        let Value::Object(keywords) = schema else {
            // `true`/`false` schemas; anything else is for the converter to refuse.
            return Ok(());
        };
        if depth > MAX_SCHEMA_DEPTH {
            return Err(SchemaError::TooDeep { at: pointer(at) });
        }
        self.add_items(1, at)?;
        for (keyword, value) in keywords {
            let here = format!("{at}/{}", segment(keyword));
            match keyword.as_str() {
                "properties" => self.properties(schema, value, &here, depth)?,
                "$defs" | "definitions" | "patternProperties" | "dependentSchemas" => {
                    for (name, sub) in value.as_object().into_iter().flatten() {
                        self.schema(sub, &format!("{here}/{}", segment(name)), depth + 1)?;
                    }
                }
                "anyOf" | "oneOf" | "allOf" | "prefixItems" | "items" => {
                    if let Value::Array(branches) = value {
                        check_alternatives(branches.len(), &here)?;
                        for (index, sub) in branches.iter().enumerate() {
                            self.schema(sub, &format!("{here}/{index}"), depth + 1)?;
                        }
                    } else {
                        self.schema(value, &here, depth + 1)?;
                    }
                }
                "additionalProperties"
                | "additionalItems"
                | "unevaluatedProperties"
                | "unevaluatedItems"
                | "propertyNames"
                | "contains"
                | "not"
                | "if"
                | "then"
                | "else" => self.schema(value, &here, depth + 1)?,
                "type" => {
                    if let Value::Array(types) = value {
                        check_alternatives(types.len(), &here)?;
                    }
                }
                "enum" => {
                    let count = value.as_array().map_or(0, Vec::len);
                    self.enum_values += count;
                    if self.enum_values > MAX_ENUM_VALUES {
                        return Err(SchemaError::TooManyEnumValues { at: pointer(&here) });
                    }
                    self.add_items(count as u64, &here)?;
                }
                "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties"
                | "maxProperties" | "minContains" | "maxContains" => {
                    let count = repetition_count(value, &here)?;
                    self.add_items(count, &here)?;
                }
                "pattern" => {
                    let Value::String(pattern) = value else {
                        return Err(SchemaError::PatternNotString { at: pointer(at) });
                    };
                    let items = check_pattern(pattern, &here)?;
                    self.add_items(items, &here)?;
                }
                "$ref" if !value.as_str().is_some_and(|target| target.starts_with('#')) => {
                    return Err(SchemaError::NonLocalRef { at: pointer(&here) });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn properties(
        &mut self,
        schema: &Value,
        properties: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), SchemaError> {
        let Value::Object(properties) = properties else {
            return Ok(());
        };
        self.properties += properties.len();
        if self.properties > MAX_SCHEMA_PROPERTIES {
            return Err(SchemaError::TooManyProperties { at: pointer(at) });
        }
        let required: Vec<&str> = (schema.get("required").and_then(Value::as_array))
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let optional = properties
            .keys()
            .filter(|name| !required.contains(&name.as_str()))
            .count();
        if optional > MAX_OPTIONAL_PROPERTIES {
            return Err(SchemaError::TooManyOptionalProperties {
                at: pointer(at),
                count: optional,
            });
        }
        for (name, sub) in properties {
            self.schema(sub, &format!("{at}/{}", segment(name)), depth + 1)?;
        }
        Ok(())
    }
}

fn check_alternatives(count: usize, at: &str) -> Result<(), SchemaError> {
    if count > MAX_SCHEMA_ALTERNATIVES {
        return Err(SchemaError::TooManyAlternatives {
            at: pointer(at),
            count,
        });
    }
    Ok(())
}

/// A count keyword's value, refused past [`MAX_REPETITION`] (also when it is a huge float).
fn repetition_count(value: &Value, at: &str) -> Result<u64, SchemaError> {
    let Value::Number(number) = value else {
        return Ok(0);
    };
    match number.as_u64() {
        Some(count) if count <= MAX_REPETITION => Ok(count),
        Some(_) => Err(SchemaError::RepetitionTooLarge {
            at: pointer(at),
            value: number.to_string(),
        }),
        None if number.as_f64().is_some_and(|f| f > MAX_REPETITION as f64) => {
            Err(SchemaError::RepetitionTooLarge {
                at: pointer(at),
                value: number.to_string(),
            })
        }
        None => Ok(0),
    }
}

/// A JSON pointer into a schema for a message: an empty path is the schema itself.
pub fn pointer(at: &str) -> String {
    if at.is_empty() {
        "/".to_owned()
    } else {
        at.to_owned()
    }
}

/// One key of a JSON pointer, escaped as RFC 6901 says, cut short and without backticks.
fn segment(key: &str) -> String {
    key.chars()
        .take(MAX_KEY_CHARS)
        .map(|c| if c == '`' { '\'' } else { c })
        .collect::<String>()
        .replace('~', "~0")
        .replace('/', "~1")
}

/// Parses a `pattern` and checks that llama.cpp's converter follows it exactly; returns how
/// many grammar items it expands into.
pub fn check_pattern(pattern: &str, at: &str) -> Result<u64, SchemaError> {
    let invalid = |message: String| SchemaError::InvalidPattern {
        at: pointer(at),
        message,
    };
    let ast = ast::parse::ParserBuilder::new()
        .nest_limit(MAX_PATTERN_NESTING)
        .build()
        .parse(pattern)
        .map_err(|error| invalid(error.kind().to_string()))?;
    // The translation catches what the syntax alone does not (unknown Unicode classes...).
    regex_syntax::hir::translate::Translator::new()
        .translate(pattern, &ast)
        .map_err(|error| invalid(error.kind().to_string()))?;
    let unsupported = |what| SchemaError::UnsupportedPattern {
        at: pointer(at),
        what,
    };
    // llama.cpp strips one leading `^` and one trailing `$` and converts what is between;
    // anything else (no anchors, `^a|b$`) it widens to any string.
    let inner = match &ast {
        Ast::Concat(concat) if concat.asts.len() >= 2 => {
            let (first, last) = (&concat.asts[0], &concat.asts[concat.asts.len() - 1]);
            if !is_assertion(first, true) || !is_assertion(last, false) {
                return Err(unsupported("no `^` at the start or `$` at the end"));
            }
            &concat.asts[1..concat.asts.len() - 1]
        }
        _ => return Err(unsupported("no `^` at the start or `$` at the end")),
    };
    let mut items = 0u64;
    for node in inner {
        items = items.saturating_add(pattern_items(node).map_err(unsupported)?);
    }
    if items > MAX_GRAMMAR_ITEMS {
        return Err(SchemaError::GrammarTooLarge { at: pointer(at) });
    }
    Ok(items)
}

fn is_assertion(node: &Ast, start: bool) -> bool {
    use ast::AssertionKind::{EndLine, EndText, StartLine, StartText};
    match node {
        Ast::Assertion(assertion) => match assertion.kind {
            StartLine | StartText => start,
            EndLine | EndText => !start,
            _ => false,
        },
        _ => false,
    }
}

/// The grammar items one pattern node expands into, or what llama.cpp cannot convert.
fn pattern_items(node: &Ast) -> Result<u64, &'static str> {
    Ok(match node {
        Ast::Empty(_) | Ast::Dot(_) => 1,
        Ast::Literal(literal) => {
            if !literal_outside_class_supported(literal) {
                return Err("an escape or character llama.cpp does not convert");
            }
            1
        }
        Ast::Flags(_) => return Err("inline flags"),
        Ast::Assertion(_) => return Err("an anchor or boundary inside the pattern"),
        Ast::ClassUnicode(_) => return Err("a Unicode class (`\\p{..}`)"),
        Ast::ClassPerl(_) => return Err("a class escape (`\\d`, `\\w`, `\\s`)"),
        Ast::ClassBracketed(class) => {
            class_supported(&class.kind)?;
            1
        }
        Ast::Repetition(repetition) => {
            let count = match repetition.op.kind {
                RepetitionKind::ZeroOrOne
                | RepetitionKind::ZeroOrMore
                | RepetitionKind::OneOrMore => 1,
                RepetitionKind::Range(RepetitionRange::Exactly(n))
                | RepetitionKind::Range(RepetitionRange::AtLeast(n))
                | RepetitionKind::Range(RepetitionRange::Bounded(_, n)) => u64::from(n),
            };
            if count > MAX_REPETITION {
                return Err("a repetition count over the limit");
            }
            pattern_items(&repetition.ast)?.saturating_mul(count.max(1))
        }
        Ast::Group(group) => {
            match &group.kind {
                GroupKind::CaptureIndex(_) => {}
                GroupKind::NonCapturing(flags) if flags.items.is_empty() => {}
                _ => return Err("a named group or group flags"),
            }
            pattern_items(&group.ast)?
        }
        Ast::Alternation(alternation) => sum_items(&alternation.asts)?,
        Ast::Concat(concat) => sum_items(&concat.asts)?,
    })
}

fn sum_items(nodes: &[Ast]) -> Result<u64, &'static str> {
    nodes.iter().try_fold(0u64, |sum, node| {
        Ok(sum.saturating_add(pattern_items(node)?))
    })
}

/// Outside a class llama.cpp takes plain characters, the escaped metacharacters, and the
/// escapes its grammar format knows (`\t \r \n \\ \" \-`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`).
fn literal_outside_class_supported(literal: &ast::Literal) -> bool {
    const ESCAPED_METACHARACTERS: &str = "^$.[]()|{}*+?\\\"-";
    match &literal.kind {
        // A stray `]` or `}` stops its converter.
        LiteralKind::Verbatim => !matches!(literal.c, ']' | '}'),
        LiteralKind::Meta | LiteralKind::Superfluous => ESCAPED_METACHARACTERS.contains(literal.c),
        LiteralKind::HexFixed(_) => true,
        LiteralKind::Special(kind) => special_escape_supported(kind),
        LiteralKind::Octal | LiteralKind::HexBrace(_) => false,
    }
}

fn special_escape_supported(kind: &SpecialLiteralKind) -> bool {
    matches!(
        kind,
        SpecialLiteralKind::Tab | SpecialLiteralKind::LineFeed | SpecialLiteralKind::CarriageReturn
    )
}

/// Inside `[...]` llama.cpp copies characters as they are, and only the escapes its grammar
/// format knows; nested classes and set operations it cannot read.
fn class_supported(set: &ClassSet) -> Result<(), &'static str> {
    match set {
        ClassSet::BinaryOp(_) => Err("a class set operation (`&&`, `--`, `~~`)"),
        ClassSet::Item(item) => class_item_supported(item),
    }
}

fn class_item_supported(item: &ClassSetItem) -> Result<(), &'static str> {
    match item {
        ClassSetItem::Empty(_) => Ok(()),
        ClassSetItem::Literal(literal) => {
            let supported = match &literal.kind {
                LiteralKind::Verbatim | LiteralKind::HexFixed(_) => true,
                LiteralKind::Meta | LiteralKind::Superfluous => "\\[]-\"".contains(literal.c),
                LiteralKind::Special(kind) => special_escape_supported(kind),
                LiteralKind::Octal | LiteralKind::HexBrace(_) => false,
            };
            supported
                .then_some(())
                .ok_or("an escape inside `[...]` llama.cpp does not convert")
        }
        ClassSetItem::Range(range) => {
            class_item_supported(&ClassSetItem::Literal(range.start.clone()))?;
            class_item_supported(&ClassSetItem::Literal(range.end.clone()))
        }
        ClassSetItem::Ascii(_) => Err("a named class (`[[:alpha:]]`)"),
        ClassSetItem::Unicode(_) => Err("a Unicode class (`\\p{..}`)"),
        ClassSetItem::Perl(_) => Err("a class escape (`\\d`, `\\w`, `\\s`)"),
        ClassSetItem::Bracketed(_) => Err("a nested class"),
        ClassSetItem::Union(union) => union.items.iter().try_for_each(class_item_supported),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object_with(properties: usize, required: usize) -> Value {
        let names: Vec<String> = (0..properties).map(|i| format!("p{i}")).collect();
        let properties: serde_json::Map<String, Value> = (names.iter())
            .map(|name| (name.clone(), json!({"type": "string"})))
            .collect();
        json!({"type": "object", "properties": properties, "required": names[..required]})
    }

    #[test]
    fn ordinary_schemas_pass() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 100, "pattern": "^[A-Z][a-z]+(-[A-Z][a-z]+)?$"},
                "age": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 10},
                "code": {"type": "string", "pattern": "^\\d{3}$".replace("\\d", "[0-9]")},
                "any": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/x"}]},
            },
            "required": ["name"],
            "$defs": {"x": {"type": "number"}},
        });
        assert_eq!(check_schema(&schema), Ok(()));
        assert_eq!(check_schema(&object_with(1000, 1000)), Ok(()));
        assert_eq!(
            check_schema(&object_with(MAX_OPTIONAL_PROPERTIES, 0)),
            Ok(())
        );
    }

    #[test]
    fn the_schema_that_killed_workers_is_refused_by_its_optional_properties() {
        // Issue 18: 6,000 optional properties, 65 KB, overflowed the worker's stack.
        let error = check_schema(&object_with(6000, 0)).unwrap_err();
        assert!(
            matches!(error, SchemaError::TooManyProperties { .. }),
            "{error}"
        );
        let error = check_schema(&object_with(MAX_OPTIONAL_PROPERTIES + 1, 0)).unwrap_err();
        assert_eq!(
            error,
            SchemaError::TooManyOptionalProperties {
                at: "/properties".into(),
                count: MAX_OPTIONAL_PROPERTIES + 1
            }
        );
        assert!(error.to_string().contains("`required`"), "{error}");
        assert!(matches!(
            check_schema(&object_with(1001, 1001)),
            Err(SchemaError::TooManyProperties { .. })
        ));
    }

    #[test]
    fn depth_alternatives_enums_and_counts_are_bounded() {
        let mut deep = json!({"type": "string"});
        for _ in 0..=MAX_SCHEMA_DEPTH {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(matches!(
            check_schema(&deep),
            Err(SchemaError::TooDeep { .. })
        ));
        let branches: Vec<Value> = (0..65).map(|i| json!({"const": i})).collect();
        assert_eq!(
            check_schema(&json!({"properties": {"x": {"anyOf": branches}}})),
            Err(SchemaError::TooManyAlternatives {
                at: "/properties/x/anyOf".into(),
                count: 65
            })
        );
        let values: Vec<u32> = (0..=MAX_ENUM_VALUES as u32).collect();
        assert!(matches!(
            check_schema(&json!({"enum": values})),
            Err(SchemaError::TooManyEnumValues { .. })
        ));
        for huge in [json!(1001), json!(1e300), json!(u64::MAX)] {
            assert!(
                matches!(
                    check_schema(&json!({"type": "string", "maxLength": huge})),
                    Err(SchemaError::RepetitionTooLarge { ref at, .. }) if at == "/maxLength"
                ),
                "{huge}"
            );
        }
        // Many counts, each under the limit, still add up.
        let properties: serde_json::Map<String, Value> = (0..100)
            .map(|i| {
                (
                    format!("p{i}"),
                    json!({"type": "string", "maxLength": 1000}),
                )
            })
            .collect();
        let names: Vec<&String> = properties.keys().collect();
        let many = json!({"properties": properties, "required": names});
        assert!(matches!(
            check_schema(&many),
            Err(SchemaError::GrammarTooLarge { .. })
        ));
        assert_eq!(
            check_schema(&json!({"$ref": "https://example.invalid/s.json"})),
            Err(SchemaError::NonLocalRef { at: "/$ref".into() })
        );
    }

    #[test]
    fn invalid_patterns_are_refused_by_place() {
        // The four of issue 18, answered 200 before.
        for pattern in ["(", "[z-a]", "a{2,1}", "\\"] {
            let schema = json!({"properties": {"code": {"type": "string", "pattern": pattern}}});
            let error = check_schema(&schema).unwrap_err();
            assert!(
                matches!(error, SchemaError::InvalidPattern { ref at, .. } if at == "/properties/code/pattern"),
                "{pattern}: {error}"
            );
        }
        assert_eq!(
            check_schema(&json!({"pattern": 7})),
            Err(SchemaError::PatternNotString { at: "/".into() })
        );
    }

    #[test]
    fn patterns_llama_cpp_would_widen_are_refused() {
        for (pattern, what) in [
            ("abc", "no `^`"),
            ("^a|b$", "no `^`"),
            ("^\\d+$", "class escape"),
            ("^[\\w-]+$", "class escape"),
            ("^\\p{L}+$", "Unicode class"),
            ("^(?i)abc$", "inline flags"),
            ("^(?P<x>a)$", "named group"),
            ("^a\\bb$", "boundary"),
            ("^\\/$", "escape"),
            ("^[[:alpha:]]$", "named class"),
        ] {
            let error = check_pattern(pattern, "/pattern").unwrap_err();
            assert!(
                matches!(error, SchemaError::UnsupportedPattern { .. })
                    && error.to_string().contains(what),
                "{pattern}: {error}"
            );
        }
        for pattern in [
            "^$",
            "^[a-z]{2,8}$",
            "^(?:ab|cd)*\\.[^\"\\n]?$",
            "^\\x41\\u00e9[\\-\\]a-c]+$",
            "^(a(b(c)))$",
        ] {
            assert!(check_pattern(pattern, "/pattern").is_ok(), "{pattern}");
        }
        assert!(matches!(
            check_pattern("^(a{1000}){1000}$", "/pattern"),
            Err(SchemaError::GrammarTooLarge { .. })
        ));
        assert!(matches!(
            check_pattern("^a{1001}$", "/pattern"),
            Err(SchemaError::UnsupportedPattern { .. })
        ));
    }

    #[test]
    fn hostile_keys_are_cut_short_in_the_pointer() {
        let key = format!("`/~{}", "k".repeat(500));
        let schema = json!({"properties": {key: {"pattern": "("}}});
        let SchemaError::InvalidPattern { at, .. } = check_schema(&schema).unwrap_err() else {
            panic!("the pattern is invalid");
        };
        assert!(at.starts_with("/properties/'~1~0kkk"), "{at}");
        assert!(at.len() < 100, "{at}");
    }
}
