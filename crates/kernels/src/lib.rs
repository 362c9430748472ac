//! The WGSL kernel library. Each shader variant is a plain, named WGSL file expanded at
//! build time from `templates/*.wgsl.tmpl` (see build.rs for the list); every shader starts
//! with its bind-group layout, takes all dimensions from a uniform, bounds-checks, and
//! clamps `exp`/`tanh` arguments.

include!(concat!(env!("OUT_DIR"), "/shaders.rs"));

/// The WGSL source of a shader variant.
pub fn source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Writes every variant as `<name>.wgsl` into `dir` (for reading and diffing).
pub fn write_all(dir: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    for (name, src) in SHADERS {
        std::fs::write(dir.join(format!("{name}.wgsl")), src)?;
    }
    Ok(SHADERS.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_shader_validates_with_naga() {
        let mut failures = Vec::new();
        for (name, src) in super::SHADERS {
            let module = match naga::front::wgsl::parse_str(src) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{name}: {}", e.emit_to_string(src)));
                    continue;
                }
            };
            let mut validator = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            );
            if let Err(e) = validator.validate(&module) {
                failures.push(format!("{name}: {e:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} shader(s) fail validation:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(super::SHADERS.len() > 100);
    }

    #[test]
    fn every_shader_documents_its_bindings_and_bounds_checks() {
        for (name, src) in super::SHADERS {
            assert!(src.contains("Bind group layout:"), "{name}");
            assert!(
                src.contains("var<uniform> params"),
                "{name}: dimensions come from a uniform"
            );
            assert!(
                src.contains("return;") || src.contains("< params."),
                "{name}: bounds check"
            );
        }
    }
}
