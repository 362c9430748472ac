//! Grouping tensor and node names into named components ("blk.3", "encoder.layer.0",
//! "/decoder/rnn"): the part of a name up to and including its first layer index.

/// The component a name belongs to. Names are split on '.', '/' and ':'; the component is
/// every segment up to and including the first purely numeric one (a layer index), or else
/// the first segment when the name has several, or "(ungrouped)".
pub fn component_of(name: &str) -> String {
    let segments: Vec<&str> = name
        .split(['.', '/', ':'])
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(i) = segments
        .iter()
        .position(|s| s.chars().all(|c| c.is_ascii_digit()))
        && i > 0
    {
        return segments[..=i].join(".");
    }
    if segments.len() > 1 {
        segments[0].to_string()
    } else {
        "(ungrouped)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::component_of;

    #[test]
    fn components_cut_at_the_first_layer_index() {
        assert_eq!(component_of("blk.12.attn_q.weight"), "blk.12");
        assert_eq!(
            component_of("encoder.layer.3.attention.self.query.weight"),
            "encoder.layer.3"
        );
        assert_eq!(
            component_of("/encoder/conv_layers.0/Conv"),
            "encoder.conv_layers.0"
        );
        assert_eq!(component_of("token_embd.weight"), "token_embd");
        assert_eq!(component_of("val_49_q"), "(ungrouped)");
        assert_eq!(component_of("onnx::LSTM_209"), "onnx");
    }
}
