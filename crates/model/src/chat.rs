//! Chat templates of GGUF decoders: the model's own Jinja `tokenizer.chat_template`, or when
//! the file has none the family's published template that m2w keeps (`templates/chat/`),
//! rendered by minijinja with Hugging Face's settings (trim_blocks, lstrip_blocks,
//! `raise_exception`, Python string methods); and which tokens end a turn.

use crate::Model;

/// Tokens that end a chat turn in the families m2w runs (ChatML, Gemma, Llama 3, Phi).
/// Generation stops at each one the vocabulary has.
pub const END_OF_TURN: [&str; 4] = ["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>"];

/// The templates m2w keeps for families whose files may lack one, by architecture.
const KEPT: [(&str, &str, &str); 1] = [(
    "gemma3",
    "gemma3.jinja",
    include_str!("../../../templates/chat/gemma3.jinja"),
)];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    pub source: String,
    /// Where it came from, for reports: "the model's tokenizer.chat_template" or
    /// "m2w's templates/chat/gemma3.jinja (the file has none)".
    pub origin: String,
}

/// One chat message: `role` and `content` (a string, or a list of `{type, text}` parts).
pub type Message = serde_json::Value;

impl ChatTemplate {
    /// The model's template, else the one m2w keeps for its family, else none.
    pub fn of_model(model: &Model) -> Option<ChatTemplate> {
        if let Some(t) = model
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
        {
            return Some(ChatTemplate {
                source: t.to_string(),
                origin: "the model's tokenizer.chat_template".into(),
            });
        }
        let arch = model
            .metadata
            .get("general.architecture")
            .and_then(|v| v.as_str())?;
        Self::kept(arch)
    }

    /// The chat template of a Hugging Face `tokenizer_config.json` (`chat_template`: a
    /// string, or named templates of which "default" or else the first), with the texts of
    /// its bos and eos tokens; None when the file or its template is missing.
    pub fn of_tokenizer_config(path: &std::path::Path) -> Option<(ChatTemplate, String, String)> {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        let source = match &doc["chat_template"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .or_else(|| named.first())?["template"]
                .as_str()?
                .to_string(),
            _ => return None,
        };
        // A token is its text, or an object with its `content`.
        let text = |v: &serde_json::Value| {
            v.as_str()
                .or_else(|| v["content"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        Some((
            ChatTemplate {
                source,
                origin: format!("{}'s chat_template", path.display()),
            },
            text(&doc["bos_token"]),
            text(&doc["eos_token"]),
        ))
    }

    /// The template m2w keeps for architecture `arch`.
    pub fn kept(arch: &str) -> Option<ChatTemplate> {
        KEPT.iter()
            .find(|(a, _, _)| *a == arch)
            .map(|(_, file, source)| ChatTemplate {
                source: source.to_string(),
                origin: format!("m2w's templates/chat/{file} (the file has none)"),
            })
    }

    /// The conversation as the model reads it; `bos`/`eos` are the vocabulary's texts.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos: &str,
        eos: &str,
    ) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_filter("tojson", python_tojson);
        env.add_template("chat", &self.source)
            .map_err(|e| format!("chat template ({}): {e}", self.origin))?;
        let t = env.get_template("chat").expect("just added");
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos,
            eos_token => eos,
        })
        .map_err(|e| format!("chat template ({}): {e}", self.origin))
    }

    /// One user turn, ready for the assistant's answer.
    pub fn user_turn(&self, prompt: &str, bos: &str, eos: &str) -> Result<String, String> {
        self.render(
            &[serde_json::json!({"role": "user", "content": prompt})],
            true,
            bos,
            eos,
        )
    }
}

/// `tojson` as Hugging Face's chat templates get it: Python's `json.dumps(x,
/// ensure_ascii=False, indent=indent)`, whose separators are ", " and ": " (", " is "," when
/// indented), not minijinja's compact, HTML-escaped JSON. Tool-calling templates print tool
/// signatures and arguments with it, and the model was trained on Python's spacing.
fn python_tojson(
    value: minijinja::Value,
    indent: Option<usize>,
    kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    let indent = match indent {
        Some(n) => Some(n),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    kwargs.assert_all_used()?;
    struct Spaced;
    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let done = match indent {
        Some(n) => {
            let pad = " ".repeat(n);
            let f = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            serde::Serialize::serialize(
                &value,
                &mut serde_json::Serializer::with_formatter(&mut out, f),
            )
        }
        None => serde::Serialize::serialize(
            &value,
            &mut serde_json::Serializer::with_formatter(&mut out, Spaced),
        ),
    };
    done.map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "cannot serialize to JSON",
        )
        .with_source(e)
    })?;
    Ok(minijinja::Value::from_safe_string(
        String::from_utf8(out).expect("serde_json writes UTF-8"),
    ))
}

/// Default stop tokens: end of sequence, then each end-of-turn token the vocabulary has.
pub fn stop_tokens(eos: Option<u32>, end_of_turn: &[u32]) -> Vec<u32> {
    let mut stop: Vec<u32> = eos.into_iter().collect();
    for &end in end_of_turn {
        if !stop.contains(&end) {
            stop.push(end);
        }
    }
    stop
}

/// The ids of the [`END_OF_TURN`] tokens a vocabulary has.
pub fn end_of_turn_ids(tokens: &[String]) -> Vec<u32> {
    END_OF_TURN
        .iter()
        .filter_map(|e| tokens.iter().position(|t| t == e).map(|i| i as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chatml_and_gemma_templates_render_turns() {
        let chatml = ChatTemplate {
            source: "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into(),
            origin: "test".into(),
        };
        assert_eq!(
            chatml.user_turn("Hi", "", "").unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let gemma = ChatTemplate::kept("gemma3").unwrap();
        let msgs = [
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": " Hi "}),
        ];
        assert_eq!(
            gemma.render(&msgs, true, "<bos>", "<eos>").unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
        let e = gemma
            .render(
                &[json!({"role": "assistant", "content": "x"})],
                true,
                "",
                "",
            )
            .unwrap_err();
        assert!(e.contains("must alternate"), "{e}");
        // tojson with Python's spacing, keys in their order, non-ASCII kept.
        let tool = json!({"name": "météo", "args": {"city": "Paris", "days": [1, 2]}});
        let env_out = {
            let mut env = minijinja::Environment::new();
            env.add_filter("tojson", python_tojson);
            env.add_template("t", "{{ tool | tojson }}|{{ tool | tojson(indent=2) }}")
                .unwrap();
            env.get_template("t")
                .unwrap()
                .render(minijinja::context! { tool => tool })
                .unwrap()
        };
        assert_eq!(
            env_out,
            "{\"name\": \"météo\", \"args\": {\"city\": \"Paris\", \"days\": [1, 2]}}|{\n  \"name\": \"météo\",\n  \"args\": {\n    \"city\": \"Paris\",\n    \"days\": [\n      1,\n      2\n    ]\n  }\n}"
        );
        assert_eq!(stop_tokens(Some(2), &[2]), vec![2]);
        assert_eq!(stop_tokens(Some(0), &[2, 5]), vec![0, 2, 5]);
    }
}
