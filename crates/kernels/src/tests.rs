use super::*;

fn parse(k: Kernel) -> naga::Module {
    naga::front::wgsl::parse_str(k.source())
        .unwrap_or_else(|e| panic!("{}: {}", k.name(), e.emit_to_string(k.source())))
}

#[test]
fn every_shader_validates_with_naga() {
    let mut failures = Vec::new();
    for (name, src) in SHADERS {
        let module = match naga::front::wgsl::parse_str(src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: {}", e.emit_to_string(src)));
                continue;
            }
        };
        // unpack2x16float (f16 block scales) is core WGSL; naga gates it behind a
        // capability that wgpu grants every Vulkan, Metal and D3D12 adapter (not WebGL).
        // `enable f16;` (the f16-weight twins) needs shader-f16, which the engine requests.
        let mut caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if Kernel::by_name(name).is_some_and(|k| k.features().contains(&Feature::ShaderF16)) {
            caps |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
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
    assert!(SHADERS.len() > 100);
}

#[test]
fn every_shader_documents_its_bindings_and_bounds_checks() {
    for (name, src) in SHADERS {
        assert!(src.contains("Bind group layout:"), "{name}");
        assert!(
            src.contains("var<uniform> params"),
            "{name}: dimensions come from a uniform"
        );
        assert!(
            src.contains("return;") || src.contains("< params."),
            "{name}: bounds check"
        );
        assert!(
            !src.contains("VARIANTS") && !src.contains("{{"),
            "{name}: the VARIANTS block and placeholders do not reach the WGSL"
        );
    }
}

#[test]
fn every_kernel_round_trips_its_name() {
    assert_eq!(Kernel::ALL.len(), SHADERS.len());
    for (i, &k) in Kernel::ALL.iter().enumerate() {
        assert_eq!(k as usize, i);
        assert_eq!(Kernel::by_name(k.name()), Some(k));
        assert_eq!(k.name().parse::<Kernel>(), Ok(k));
        assert_eq!(SHADERS[i], (k.name(), k.source()));
        assert_eq!(source(k.name()), Some(k.source()));
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{}\"", k.name()));
        assert_eq!(serde_json::from_str::<Kernel>(&json).unwrap(), k);
    }
    assert_eq!(Kernel::by_name("no_such_kernel"), None);
    assert_eq!(source("no_such_kernel"), None);
    assert!(serde_json::from_str::<Kernel>("\"no_such_kernel\"").is_err());
    assert_eq!(Kernel::EwReluF32.name(), "ew_relu_f32");
    assert_eq!(Kernel::MatmulF32Rb.name(), "matmul_f32_rb");
    assert_eq!(Kernel::GemvQkvQ80F32.name(), "gemv_qkv_q8_0_f32");
    assert_eq!(Kernel::EwReluF32.template(), "elementwise");
    assert_eq!(Kernel::EwReluF32.params_struct(), "Elementwise");
}

#[test]
fn metadata() {
    // The engine requests the adapter's limit for this one: 16 x 2 x 16 + 16 x 4 x 16 vec4.
    assert_eq!(Kernel::MatmulF32Rb.workgroup_bytes(), 24576);
    assert_eq!(Kernel::MatmulF32Tiled.workgroup_bytes(), 2 * 16 * 16 * 4);
    assert_eq!(Kernel::EwAddF32.workgroup_bytes(), 0);
    for &k in Kernel::ALL {
        if k != Kernel::MatmulF32Rb && k != Kernel::MatmulF32RbF16w {
            assert!(k.workgroup_bytes() <= 16384, "{k}");
        }
        assert_eq!(
            k.features().contains(&Feature::ShaderF16),
            k.source().contains("enable f16;"),
            "{k}"
        );
        assert_eq!(
            k.features().contains(&Feature::Subgroups),
            k.source().contains("enable subgroups;"),
            "{k}"
        );
    }
    assert_eq!(Kernel::EwAddF32.elem(), Elem::F32);
    assert_eq!(Kernel::EwAddI32.elem(), Elem::I32);
    assert_eq!(Kernel::EwGreaterF32.elem(), Elem::Bool);
    assert_eq!(Kernel::EwCastF32I32.elem(), Elem::I32);
    assert_eq!(Kernel::ReduceArgmaxF32.elem(), Elem::I32);
    assert_eq!(Kernel::ArgmaxRowsF32.elem(), Elem::I32);
    assert_eq!(Kernel::CopyStrided.elem(), Elem::Word);
    assert_eq!(Kernel::GemvQ40F32.elem(), Elem::F32);
}

/// Each f16-weight twin is its kernel with one binding, and only that one, read as `f16`:
/// the same bindings otherwise, the same uniform block, the same workgroup size.
#[test]
fn f16_weight_twins_differ_from_their_kernel_in_one_binding() {
    let storage = |k: Kernel| -> Vec<(u32, String)> {
        let m = parse(k);
        let mut v: Vec<(u32, String)> = m
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let b = g.binding.as_ref()?;
                let ty = match &m.types[g.ty].inner {
                    naga::TypeInner::Array { base, .. } => format!("{:?}", m.types[*base].inner),
                    other => format!("{other:?}"),
                };
                Some((b.binding, ty))
            })
            .collect();
        v.sort();
        v
    };
    let mut twins = 0;
    for &k in Kernel::ALL {
        let Some((twin, binding)) = k.f16_weight_twin() else {
            continue;
        };
        twins += 1;
        assert!(twin.features().contains(&Feature::ShaderF16), "{twin}");
        assert_eq!(k.params_layout(), twin.params_layout(), "{twin}");
        assert_eq!(k.workgroup_bytes(), twin.workgroup_bytes(), "{twin}");
        let (a, b) = (storage(k), storage(twin));
        assert_eq!(a.len(), b.len(), "{twin}");
        for ((ba, ta), (bb, tb)) in a.iter().zip(&b) {
            assert_eq!(ba, bb, "{twin}");
            if *ba == binding {
                assert!(ta.contains("Float, width: 4"), "{k} binding {ba}: {ta}");
                assert!(tb.contains("Float, width: 2"), "{twin} binding {bb}: {tb}");
            } else {
                assert_eq!(ta, tb, "{twin} binding {ba}");
            }
        }
    }
    assert_eq!(
        twins, 3,
        "matmul_f32_rb, matmul_f32_tiled, conv2d_f32_direct"
    );
}

/// workgroup_bytes (computed by build.rs from the declarations) against naga's layout of
/// every `var<workgroup>`, each rounded up to 16 bytes as WebGPU counts them.
#[test]
fn workgroup_bytes_match_naga() {
    for &k in Kernel::ALL {
        let module = parse(k);
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let bytes: u32 = module
            .global_variables
            .iter()
            .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
            .map(|(_, v)| layouter[v.ty].size.div_ceil(16) * 16)
            .sum();
        assert_eq!(k.workgroup_bytes(), bytes, "{k}");
    }
}

/// Every kernel's `params_layout` (parsed by build.rs) against naga's reading of the WGSL
/// `struct Params` bound as `params`: names, types, offsets and size.
#[test]
fn params_layout_matches_the_wgsl() {
    use naga::{ScalarKind, TypeInner, VectorSize};
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (ScalarKind::Uint, 4) => Scalar::U32,
        (ScalarKind::Sint, 4) => Scalar::I32,
        (ScalarKind::Float, 4) => Scalar::F32,
        other => panic!("uniform scalar {other:?}"),
    };
    for &k in Kernel::ALL {
        let module = parse(k);
        let (_, var) = module
            .global_variables
            .iter()
            .find(|(_, v)| v.name.as_deref() == Some("params"))
            .unwrap_or_else(|| panic!("{k}: no params"));
        let TypeInner::Struct { members, span } = &module.types[var.ty].inner else {
            panic!("{k}: params is not a struct");
        };
        let ty = |t: naga::Handle<naga::Type>| match &module.types[t].inner {
            TypeInner::Scalar(s) => ParamType::Scalar(scalar(*s)),
            TypeInner::Vector {
                size: VectorSize::Quad,
                scalar: s,
            } => ParamType::Vec4(scalar(*s)),
            TypeInner::Array {
                base,
                size: naga::ArraySize::Constant(n),
                ..
            } => match &module.types[*base].inner {
                TypeInner::Vector {
                    size: VectorSize::Quad,
                    scalar: s,
                } => ParamType::Vec4Array(scalar(*s), n.get()),
                other => panic!("{k}: array of {other:?}"),
            },
            other => panic!("{k}: field type {other:?}"),
        };
        let wgsl: Vec<ParamField> = members
            .iter()
            .map(|m| ParamField {
                name: m.name.clone().unwrap().leak(),
                ty: ty(m.ty),
                offset: m.offset,
            })
            .collect();
        assert_eq!(k.params_layout(), wgsl.as_slice(), "{k}");
        assert_eq!(
            k.params_words(),
            (span.div_ceil(16) * 16).max(16) as usize / 4,
            "{k}"
        );
    }
}

#[test]
fn words_of_two_templates_by_hand() {
    let p = params::Elementwise {
        n: 6,
        rank: 2,
        p0: 0.5,
        p1: -2.0,
        shape: [[2, 3, 0, 0], [0; 4]],
        a_strides: [[3, 1, 0, 0], [0; 4]],
        b_strides: [[0, 1, 0, 0], [0; 4]],
        c_strides: [[0; 4], [0, 0, 0, 9]],
    };
    let mut want = vec![6, 2, 0x3f00_0000, 0xc000_0000];
    want.extend([2, 3, 0, 0, 0, 0, 0, 0]);
    want.extend([3, 1, 0, 0, 0, 0, 0, 0]);
    want.extend([0, 1, 0, 0, 0, 0, 0, 0]);
    want.extend([0, 0, 0, 0, 0, 0, 0, 9]);
    assert_eq!(p.words(), want);
    assert_eq!(params::Elementwise::WORDS, 36);

    // i32 fields as two's complement; 4 + 3 x 8 words.
    let p = params::CopyStrided {
        n: 10,
        rank: 1,
        src_offset: -1,
        dst_offset: 4,
        shape: [[10, 0, 0, 0], [0; 4]],
        src_strides: [[-1, 0, 0, 0], [0; 4]],
        dst_strides: [[1, 0, 0, 0], [0; 4]],
    };
    let mut want = vec![10, 1, 0xffff_ffff, 4, 10, 0, 0, 0, 0, 0, 0, 0];
    want.extend([0xffff_ffff, 0, 0, 0, 0, 0, 0, 0]);
    want.extend([1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(p.words(), want);

    // Two u32s: 8 bytes of WGSL struct, padded to the 16-byte minimum.
    assert_eq!(params::Fill { n: 3, value: 7 }.words(), vec![3, 7, 0, 0]);

    // A vec4 field (matmul's batch strides) is 16-byte aligned.
    let p = params::Matmul {
        m: 1,
        n: 2,
        k: 3,
        batch_rank: 1,
        a_rs: 3,
        a_cs: 1,
        b_rs: 2,
        b_cs: 1,
        batch_shape: [5, 1, 1, 1],
        a_batch_strides: [3, 0, 0, 0],
        b_batch_strides: [6, 0, 0, 0],
    };
    assert_eq!(
        p.words(),
        vec![1, 2, 3, 1, 3, 1, 2, 1, 5, 1, 1, 1, 3, 0, 0, 0, 6, 0, 0, 0]
    );
}

/// The engine's hand packing (crates/engine/src/lower.rs `struct P`): scalars in order,
/// `.arr` = an array<vec4, 2> as 8 words, then zero-padded to a multiple of 4 words, at
/// least 4.
struct P(Vec<u32>);

impl P {
    fn u(mut self, v: usize) -> Self {
        self.0.push(v as u32);
        self
    }
    fn i(mut self, v: i64) -> Self {
        self.0.push(v as i32 as u32);
        self
    }
    fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
    fn arr(mut self, v: &[i64]) -> Self {
        for k in 0..8 {
            self.0.push(v.get(k).copied().unwrap_or(0) as i32 as u32);
        }
        self
    }
    fn done(mut self) -> Vec<u32> {
        while !self.0.len().is_multiple_of(4) || self.0.is_empty() {
            self.0.push(0);
        }
        self.0
    }
}

fn vec4x2<T: Copy + Default>(v: &[T]) -> [[T; 4]; 2] {
    let mut out = [[T::default(); 4]; 2];
    for (i, &x) in v.iter().enumerate() {
        out[i / 4][i % 4] = x;
    }
    out
}

#[test]
fn structs_pack_like_the_engines_hand_packing() {
    // Elementwise.
    let (shape, sa, sb) = ([4i64, 1, 3], [3i64, 0, 1], [0i64, 0, 1]);
    let hand = P(vec![])
        .u(12)
        .u(3)
        .f(0.25)
        .f(1.5)
        .arr(&shape)
        .arr(&sa)
        .arr(&sb)
        .arr(&[])
        .done();
    let u = |v: &[i64]| vec4x2(&v.iter().map(|&x| x as u32).collect::<Vec<_>>());
    let typed = params::Elementwise {
        n: 12,
        rank: 3,
        p0: 0.25,
        p1: 1.5,
        shape: u(&shape),
        a_strides: u(&sa),
        b_strides: u(&sb),
        c_strides: u(&[]),
    };
    assert_eq!(typed.words(), hand);
    assert_eq!(typed.words().len(), Kernel::EwMulF32.params_words());

    // Pad: an i32 array between u32 arrays.
    let hand = P(vec![])
        .u(30)
        .u(2)
        .u(0)
        .u(0)
        .arr(&[5, 6])
        .arr(&[3, 4])
        .arr(&[1, -1])
        .arr(&[4, 1])
        .done();
    let typed = params::Pad {
        n: 30,
        rank: 2,
        pad0: 0,
        pad1: 0,
        out_shape: vec4x2(&[5, 6]),
        in_shape: vec4x2(&[3, 4]),
        before: vec4x2(&[1, -1]),
        in_strides: vec4x2(&[4, 1]),
    };
    assert_eq!(typed.words(), hand);

    // Attention: scalars only, an f32 among them.
    let hand = P(vec![])
        .u(1)
        .u(9)
        .u(3)
        .u(64)
        .u(17)
        .u(2048)
        .f(0.125)
        .u(0)
        .done();
    let typed = params::AttentionTiled {
        t: 1,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        start: 17,
        ctx: 2048,
        scale: 0.125,
        window: 0,
    };
    assert_eq!(typed.words(), hand);

    // Copy: i32 scalars and i32 arrays.
    let hand = P(vec![])
        .u(8)
        .u(1)
        .i(-3)
        .i(2)
        .arr(&[8])
        .arr(&[-1])
        .arr(&[1])
        .done();
    let typed = params::CopyStrided {
        n: 8,
        rank: 1,
        src_offset: -3,
        dst_offset: 2,
        shape: vec4x2(&[8]),
        src_strides: vec4x2(&[-1]),
        dst_strides: vec4x2(&[1]),
    };
    assert_eq!(typed.words(), hand);
}

/// For every template the WGSL layout has no padding between fields, so the hand packing
/// convention (fields back to back, then padded to 16 bytes) is the WGSL layout; a struct
/// that broke it (a vec4 after 1-3 scalars) would need its padding fields spelled out.
#[test]
fn no_template_has_implicit_padding_between_fields() {
    for &k in Kernel::ALL {
        let mut end = 0;
        for f in k.params_layout() {
            assert_eq!(f.offset, end, "{k}: {} is not packed back to back", f.name);
            end += match f.ty {
                ParamType::Scalar(_) => 4,
                ParamType::Vec4(_) => 16,
                ParamType::Vec4Array(_, n) => 16 * n,
            };
        }
        assert_eq!(
            k.params_words(),
            (end.div_ceil(16) * 16).max(16) as usize / 4
        );
    }
}
