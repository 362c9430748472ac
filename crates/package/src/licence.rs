//! The licence a package declares: the model's own, read from its metadata (GGUF
//! `general.license`, an ONNX or safetensors `license`/`licence` property), written as npm's
//! `license` field takes it (an SPDX identifier), with the attribution the metadata gives
//! (author, source URL) for the package README. A model that states no licence gets
//! `SEE LICENSE IN MODEL_LICENSE.md`, a file that says so and names the model file: m2w
//! never guesses a licence.

use std::path::Path;

/// What the package says about its model's licence.
#[derive(Clone, Debug, PartialEq)]
pub struct Licence {
    /// npm's `license` field.
    pub npm: String,
    /// The model's words, as its metadata has them (None: not stated).
    pub declared: Option<String>,
    /// Authors, organisation and source as the metadata names them.
    pub attribution: Vec<String>,
}

/// SPDX identifiers of the licences models commonly state in lower case.
const SPDX: &[(&str, &str)] = &[
    ("apache-2.0", "Apache-2.0"),
    ("apache 2.0", "Apache-2.0"),
    ("mit", "MIT"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("cc-by-4.0", "CC-BY-4.0"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("cc-by-nc-4.0", "CC-BY-NC-4.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("gpl-3.0", "GPL-3.0-only"),
    ("lgpl-3.0", "LGPL-3.0-only"),
    ("mpl-2.0", "MPL-2.0"),
    ("unlicense", "Unlicense"),
];

/// The licence of the model at `path` (a file; the first licence found among several).
pub fn of_models(paths: &[&Path]) -> Licence {
    let mut attribution = Vec::new();
    let mut declared = None;
    for p in paths {
        let Ok(model) = m2w_model::Model::open(p) else {
            continue;
        };
        let text = |keys: &[&str]| {
            keys.iter().find_map(|k| {
                model
                    .metadata
                    .get(*k)
                    .and_then(|v| v.as_str())
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            })
        };
        if declared.is_none() {
            declared = text(&["general.license", "license", "licence", "License"]);
        }
        for (label, keys) in [
            ("author", &["general.author", "author"][..]),
            (
                "organization",
                &["general.organization", "organization"][..],
            ),
            (
                "source",
                &["general.source.url", "general.url", "source", "url"][..],
            ),
        ] {
            if let Some(v) = text(keys) {
                let line = format!("{label}: {v}");
                if !attribution.contains(&line) {
                    attribution.push(line);
                }
            }
        }
    }
    let npm = npm_field(declared.as_deref());
    Licence {
        npm,
        declared,
        attribution,
    }
}

/// npm's `license` field for a declared licence: its SPDX identifier, or a pointer to
/// MODEL_LICENSE.md when it has none we know (or none is declared).
fn npm_field(declared: Option<&str>) -> String {
    declared
        .and_then(|d| {
            SPDX.iter()
                .find(|(k, spdx)| k.eq_ignore_ascii_case(d) || *spdx == d)
                .map(|(_, spdx)| spdx.to_string())
        })
        .unwrap_or_else(|| "SEE LICENSE IN MODEL_LICENSE.md".into())
}

impl Licence {
    /// MODEL_LICENSE.md: what the model's metadata says, or that it says nothing.
    pub fn notice(&self, model: &str) -> String {
        let mut s = format!("# Licence of {model}\n\n");
        match &self.declared {
            Some(d) => s.push_str(&format!(
                "The model file declares its licence as `{d}` in its metadata. The package's\nweights are that model's, under that licence; the generated code is m2w's output.\n"
            )),
            None => s.push_str(
                "The model file states no licence in its metadata. Its weights are under whatever\nlicence their source gives; check it before you publish this package.\n",
            ),
        }
        if !self.attribution.is_empty() {
            s.push_str("\nAttribution from the model's metadata:\n\n");
            for a in &self.attribution {
                s.push_str(&format!("- {a}\n"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stated_licence_becomes_its_spdx_identifier_and_none_is_never_guessed() {
        let l = npm_field;
        assert_eq!(l(Some("apache-2.0")), "Apache-2.0");
        assert_eq!(l(Some("MIT")), "MIT");
        assert_eq!(l(Some("Apache-2.0")), "Apache-2.0");
        assert_eq!(l(Some("gemma")), "SEE LICENSE IN MODEL_LICENSE.md");
        assert_eq!(l(None), "SEE LICENSE IN MODEL_LICENSE.md");
    }
}
