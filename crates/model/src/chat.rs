//! Chat formats of GGUF decoders: how one user turn is wrapped before tokenizing, and which
//! tokens end a turn. ChatML (`<|im_start|>role\n...<|im_end|>`) is the only one so far;
//! it is recognised from the `tokenizer.chat_template` metadata.

use crate::Model;

/// The token that ends a ChatML turn; generation stops there whenever the vocabulary has it.
pub const CHATML_END: &str = "<|im_end|>";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatFormat {
    ChatMl,
}

impl ChatFormat {
    /// The format of a Jinja chat template, when m2w knows it.
    pub fn from_template(template: &str) -> Option<ChatFormat> {
        template
            .contains("<|im_start|>")
            .then_some(ChatFormat::ChatMl)
    }

    /// The format named by a model's `tokenizer.chat_template`, when m2w knows it.
    pub fn of_model(model: &Model) -> Option<ChatFormat> {
        model
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .and_then(ChatFormat::from_template)
    }

    /// The name the generated package uses (`chatFormat`).
    pub fn name(self) -> &'static str {
        match self {
            ChatFormat::ChatMl => "chatml",
        }
    }

    /// One user turn, ready for the assistant's answer.
    pub fn user_turn(self, prompt: &str) -> String {
        match self {
            ChatFormat::ChatMl => {
                format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
            }
        }
    }
}

/// Default stop tokens: end of sequence, then the end of a chat turn when the vocabulary
/// has one (and it is not the same token).
pub fn stop_tokens(eos: Option<u32>, end_of_turn: Option<u32>) -> Vec<u32> {
    let mut stop: Vec<u32> = eos.into_iter().collect();
    if let Some(end) = end_of_turn
        && !stop.contains(&end)
    {
        stop.push(end);
    }
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_wraps_one_user_turn() {
        let f = ChatFormat::from_template("{% for m in messages %}<|im_start|>{{m.role}}").unwrap();
        assert_eq!(
            f.user_turn("Hi"),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(ChatFormat::from_template("[INST]"), None);
        assert_eq!(stop_tokens(Some(2), Some(2)), vec![2]);
        assert_eq!(stop_tokens(Some(0), Some(2)), vec![0, 2]);
    }
}
