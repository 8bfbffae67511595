//! Loading the rendered manifests of an app: plain YAML (several documents a file) and JSON, in a
//! deterministic order, validated as a whole before anything is applied.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use thiserror::Error;

/// One object declared in Git, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Path of the file relative to the repository root.
    pub source_path: String,
    /// 1-based line where the object's document starts.
    pub line: usize,
    pub object: Value,
}

/// What identifies an object in a cluster, for duplicate checks and inventories.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&object_name(
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        ))
    }
}

/// `Kind namespace/name` (`Kind name` when cluster-scoped), the way messages name an object.
pub fn object_name(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace.filter(|ns| !ns.is_empty()) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

impl Manifest {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }

    /// API group and version of `apiVersion` ("" is the core group).
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version().split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.api_version()),
        }
    }

    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: self.group_version().0.to_owned(),
            kind: self.kind().to_owned(),
            namespace: self.namespace().map(str::to_owned),
            name: self.name().to_owned(),
        }
    }

    /// An error about this object that the loader or the cluster's APIs found.
    pub fn unsupported(&self, message: &'static str) -> LoadError {
        LoadError::Unsupported {
            path: self.source_path.clone(),
            line: self.line,
            kind: self.kind().to_owned(),
            name: self.name().to_owned(),
            message,
        }
    }

    /// `file:line`, the way errors point at the object.
    pub fn location(&self) -> String {
        format!("{}:{}", self.source_path, self.line)
    }
}

/// Why the manifests of an app cannot be synced. Each names the file and line at fault.
#[derive(Debug, Error, PartialEq)]
pub enum LoadError {
    #[error("{path}: the file is not UTF-8")]
    Encoding { path: String },
    #[error("{path}:{line}: invalid {format}: {message}")]
    Syntax {
        path: String,
        line: usize,
        format: &'static str,
        message: String,
    },
    #[error("{path}:{line}: the document is not an object (a mapping with apiVersion and kind)")]
    NotAnObject { path: String, line: usize },
    #[error("{path}:{line}: {field} is missing or empty")]
    MissingField {
        path: String,
        line: usize,
        field: &'static str,
    },
    #[error("{path}:{line}: {kind} {name}: {message}")]
    Unsupported {
        path: String,
        line: usize,
        kind: String,
        name: String,
        message: &'static str,
    },
    #[error("{path}:{line}: {object}: {message}")]
    Invalid {
        path: String,
        line: usize,
        object: String,
        message: String,
    },
    #[error("{path}:{line}: {object} is declared twice; the other is at {other}")]
    Duplicate {
        path: String,
        line: usize,
        object: String,
        other: String,
    },
}

/// Every error found, so a user fixes them all in one go.
#[derive(Debug, Error, PartialEq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} invalid manifest(s):", self.0.len())?;
        for err in &self.0 {
            write!(f, "\n  {err}")?;
        }
        Ok(())
    }
}

/// Whether a file under the app path holds manifests.
pub fn is_manifest_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json")
}

/// Loads and validates every manifest file (`path`, contents). Files are read in path order and
/// documents in file order, so the result is the same on every machine. Either every manifest is
/// valid, or nothing is returned but the errors.
pub fn load<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<Manifest>, LoadErrors> {
    let mut files: Vec<_> = files
        .into_iter()
        .filter(|(path, _)| is_manifest_file(path))
        .collect();
    files.sort_by(|a, b| a.0.cmp(b.0));

    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for (path, bytes) in files {
        let Ok(text) = std::str::from_utf8(bytes) else {
            errors.push(LoadError::Encoding {
                path: path.to_owned(),
            });
            continue;
        };
        if path.to_ascii_lowercase().ends_with(".json") {
            match serde_json::from_str::<Value>(text) {
                Ok(value) => push_checked(path, 1, value, &mut manifests, &mut errors),
                Err(err) => errors.push(LoadError::Syntax {
                    path: path.to_owned(),
                    line: err.line(),
                    format: "JSON",
                    message: err.to_string(),
                }),
            }
            continue;
        }
        for (line, document) in yaml_documents(text) {
            if is_blank(&document) {
                continue;
            }
            match serde_saphyr::from_str::<Value>(&document) {
                Ok(Value::Null) => {}
                Ok(value) => push_checked(path, line, value, &mut manifests, &mut errors),
                Err(err) => {
                    let inner = err
                        .location()
                        .map(|l| l.line() as usize)
                        .unwrap_or(1)
                        .max(1);
                    errors.push(LoadError::Syntax {
                        path: path.to_owned(),
                        line: line + inner - 1,
                        format: "YAML",
                        message: first_line(&err.to_string()),
                    });
                }
            }
        }
    }
    check_duplicates(&manifests, &mut errors);
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Loads the manifests of a whole app: [`load`], then what only the whole set can show (a
/// Canary's target must be declared beside it).
pub fn load_app<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<Manifest>, LoadErrors> {
    let manifests = load(files)?;
    let mut errors = Vec::new();
    crate::canary::check(&manifests, &mut errors);
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Reports objects declared twice. Call again after namespaces are defaulted, when two
/// declarations may turn out to be the same object.
pub fn check_duplicates(manifests: &[Manifest], errors: &mut Vec<LoadError>) {
    let mut seen: BTreeMap<ObjectKey, &Manifest> = BTreeMap::new();
    for m in manifests {
        if let Some(first) = seen.insert(m.key(), m) {
            errors.push(LoadError::Duplicate {
                path: m.source_path.clone(),
                line: m.line,
                object: m.key().to_string(),
                other: first.location(),
            });
            seen.insert(m.key(), first);
        }
    }
}

fn push_checked(
    path: &str,
    line: usize,
    value: Value,
    manifests: &mut Vec<Manifest>,
    errors: &mut Vec<LoadError>,
) {
    if !value.is_object() {
        errors.push(LoadError::NotAnObject {
            path: path.to_owned(),
            line,
        });
        return;
    }
    let manifest = Manifest {
        source_path: path.to_owned(),
        line,
        object: value,
    };
    let missing = |field| LoadError::MissingField {
        path: path.to_owned(),
        line,
        field,
    };
    if manifest.api_version().is_empty() {
        errors.push(missing("apiVersion"));
        return;
    }
    if manifest.kind().is_empty() {
        errors.push(missing("kind"));
        return;
    }
    if manifest.name().is_empty() {
        let generate = !manifest.object["metadata"]["generateName"].is_null();
        errors.push(if generate {
            LoadError::Unsupported {
                path: path.to_owned(),
                line,
                kind: manifest.kind().to_owned(),
                name: "(generateName)".to_owned(),
                message: "generateName cannot be synced: Git must name every object",
            }
        } else {
            missing("metadata.name")
        });
        return;
    }
    if manifest.kind() == "List" || manifest.object.get("items").is_some_and(Value::is_array) {
        errors.push(manifest.unsupported("lists cannot be synced: write one object per document"));
        return;
    }
    manifests.push(manifest);
}

/// Splits a YAML stream into documents with the 1-based line each starts on.
fn yaml_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if marker || line == "..." {
            documents.push((start, std::mem::take(&mut current)));
            start = number + 1;
            if marker && line.len() > 3 {
                // `--- value` starts the document on the marker line.
                start = number;
                current.push_str(&line[4..]);
                current.push('\n');
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    documents.push((start, current));
    documents
}

fn is_blank(document: &str) -> bool {
    document
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_one(path: &str, text: &str) -> Result<Vec<Manifest>, LoadErrors> {
        load([(path, text.as_bytes())])
    }

    #[test]
    fn documents_keep_file_order_and_their_start_lines() {
        let text = "# leading comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: other\n";
        let manifests = load_one("app/config.yaml", text).expect("valid");
        assert_eq!(manifests.len(), 2);
        assert_eq!((manifests[0].name(), manifests[0].line), ("a", 1));
        assert_eq!((manifests[1].name(), manifests[1].line), ("b", 9));
        assert_eq!(manifests[1].namespace(), Some("other"));
        assert_eq!(manifests[1].location(), "app/config.yaml:9");
    }

    #[test]
    fn files_are_read_in_path_order_and_other_files_are_ignored() {
        let cm =
            |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\n");
        let (b, a, readme) = (cm("from-b"), cm("from-a"), "# not a manifest".to_owned());
        let manifests = load([
            ("z/b.yml", b.as_bytes()),
            (
                "a.json",
                br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#.as_slice(),
            ),
            ("m/a.yaml", a.as_bytes()),
            ("README.md", readme.as_bytes()),
        ])
        .expect("valid");
        let names: Vec<_> = manifests.iter().map(Manifest::name).collect();
        assert_eq!(names, ["s", "from-a", "from-b"]);
    }

    #[test]
    fn a_syntax_error_names_the_file_and_the_line_in_the_stream() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n";
        let err = load_one("bad.yaml", text).expect_err("invalid YAML");
        assert_eq!(err.0.len(), 1, "{err}");
        match &err.0[0] {
            LoadError::Syntax { path, line, .. } => {
                assert_eq!(path, "bad.yaml");
                assert!(
                    (5..=9).contains(line),
                    "line {line} is inside the second document"
                );
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn missing_fields_and_duplicates_are_all_reported() {
        let text = "kind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: c-}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n";
        let err = load_one("x.yaml", text).expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("x.yaml:1: apiVersion is missing"), "{text}");
        assert!(text.contains("x.yaml:4: kind is missing"), "{text}");
        assert!(text.contains("generateName cannot be synced"), "{text}");
        assert!(
            text.contains("x.yaml:15: ConfigMap d is declared twice; the other is at x.yaml:11"),
            "{text}"
        );
        assert_eq!(err.0.len(), 4);
    }

    #[test]
    fn scalars_lists_and_invalid_encodings_are_refused() {
        assert!(matches!(
            load_one("s.yaml", "just a string\n").expect_err("scalar").0[0],
            LoadError::NotAnObject { line: 1, .. }
        ));
        let list = "apiVersion: v1\nkind: List\nmetadata: {name: l}\nitems: []\n";
        assert!(
            load_one("l.yaml", list)
                .expect_err("list")
                .to_string()
                .contains("lists cannot be synced")
        );
        let err = load([("b.yaml", [0xff_u8, 0xfe].as_slice())]).expect_err("not utf-8");
        assert_eq!(
            err.0,
            vec![LoadError::Encoding {
                path: "b.yaml".into()
            }]
        );
    }

    #[test]
    fn group_and_version_split_apiversion() {
        let m = &load_one(
            "d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
        )
        .expect("valid")[0];
        assert_eq!(m.group_version(), ("apps", "v1"));
        assert_eq!(m.key().to_string(), "Deployment web");
    }
}
