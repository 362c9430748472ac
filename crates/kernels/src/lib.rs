//! The WGSL kernel library. Each shader variant is a plain, named WGSL file expanded at
//! build time from `templates/*.wgsl.tmpl`: the VARIANTS block at the top of each template
//! lists its variants (build.rs is a generic expander). Every shader starts with its
//! bind-group layout, takes all dimensions from a uniform, bounds-checks, and clamps
//! `exp`/`tanh` arguments.
//!
//! [`Kernel`] names every shader with its source and metadata; [`params`] holds one struct
//! per template, read from its WGSL `struct Params`, that packs the uniform block.

include!(concat!(env!("OUT_DIR"), "/shaders.rs"));

/// A GPU feature a shader needs beyond core WebGPU (from its `enable` directives).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Feature {
    /// `enable f16;`
    ShaderF16,
    /// `enable subgroups;`
    Subgroups,
}

/// The element type of a kernel's main output (`elem=` in its VARIANTS row).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Elem {
    F32,
    F16,
    I32,
    U32,
    /// Booleans stored as one u32 word each (0 or 1).
    Bool,
    /// 32-bit words of any element type, moved without being read as numbers.
    Word,
}

/// Scalar type of a uniform field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Scalar {
    U32,
    I32,
    F32,
}

/// Type of a `struct Params` field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ParamType {
    /// `u32`, `i32` or `f32`: 4 bytes, 4-byte aligned.
    Scalar(Scalar),
    /// `vec4<T>`: 16 bytes, 16-byte aligned.
    Vec4(Scalar),
    /// `array<vec4<T>, N>`: 16 N bytes, 16-byte aligned.
    Vec4Array(Scalar, u32),
}

/// A field of a template's `struct Params`: name as in WGSL, type, byte offset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ParamField {
    pub name: &'static str,
    pub ty: ParamType,
    pub offset: u32,
}

/// A template's uniform block (the structs of [`params`]).
pub trait Params {
    /// The template (`templates/<TEMPLATE>.wgsl.tmpl`) that declares it.
    const TEMPLATE: &'static str;
    /// Size of the packed block in 32-bit words: the WGSL struct size rounded up to 16
    /// bytes, at least 16.
    const WORDS: usize;
    /// The fields in declaration order with their offsets.
    const LAYOUT: &'static [ParamField];
    /// The uniform block as words, laid out per WGSL's uniform address space rules
    /// (scalars 4 bytes, vec4 and arrays of vec4 16-byte aligned, zero padding).
    fn words(&self) -> Vec<u32>;
}

/// A value that packs into consecutive uniform slots of type `S`: `u32` words for a
/// concrete block, or the engine's symbolic sizes for a block whose words depend on
/// run-time dims (the engine implements `Put<Expr>` for its expression type).
pub trait Put<S> {
    /// Slots taken (a vec4 is 4, an array of N vec4 is 4 N).
    const SLOTS: usize;
    fn put(&self, w: &mut [S]);
}

impl Put<u32> for u32 {
    const SLOTS: usize = 1;
    fn put(&self, w: &mut [u32]) {
        w[0] = *self;
    }
}

impl Put<u32> for i32 {
    const SLOTS: usize = 1;
    fn put(&self, w: &mut [u32]) {
        w[0] = *self as u32;
    }
}

impl Put<u32> for f32 {
    const SLOTS: usize = 1;
    fn put(&self, w: &mut [u32]) {
        w[0] = self.to_bits();
    }
}

/// `vec4<T>` as `[T; 4]` and `array<vec4<T>, N>` as `[[T; 4]; N]`: both packed densely
/// (a vec4 is 16 bytes and an array of vec4 has a 16-byte stride).
impl<S, T: Put<S>, const N: usize> Put<S> for [T; N] {
    const SLOTS: usize = N * T::SLOTS;
    fn put(&self, w: &mut [S]) {
        for (i, v) in self.iter().enumerate() {
            v.put(&mut w[i * T::SLOTS..]);
        }
    }
}

impl Kernel {
    /// The variant name (`ew_relu_f32`): the file name of its WGSL and the key in plans.
    pub fn name(self) -> &'static str {
        NAMES[self as usize]
    }

    /// The expanded WGSL source.
    pub fn source(self) -> &'static str {
        SOURCES[self as usize]
    }

    /// Bytes of workgroup memory the shader declares (its `var<workgroup>` variables, each
    /// rounded up to 16 bytes); compare with the device's maxComputeWorkgroupStorageSize
    /// (WebGPU's default limit is 16384).
    pub fn workgroup_bytes(self) -> u32 {
        WORKGROUP_BYTES[self as usize]
    }

    /// GPU features the shader enables.
    pub fn features(self) -> &'static [Feature] {
        FEATURES[self as usize]
    }

    /// The kernel's f16-weight twin, if it has one: the same computation with binding `.1`
    /// (a weight) stored as IEEE half, read as f32 and accumulated in f32. It needs
    /// shader-f16; `m2w_engine::half` decides which dispatches of a plan may use it.
    pub fn f16_weight_twin(self) -> Option<(Kernel, u32)> {
        F16_TWINS[self as usize]
    }

    /// The element type of the kernel's main output.
    pub fn elem(self) -> Elem {
        ELEMS[self as usize]
    }

    /// The template the shader is expanded from (`elementwise` for `ew_relu_f32`).
    pub fn template(self) -> &'static str {
        TEMPLATE_INFO[TEMPLATES[self as usize]].0
    }

    /// The name of the [`params`] struct that packs this kernel's uniform (`Elementwise`).
    pub fn params_struct(self) -> &'static str {
        TEMPLATE_INFO[TEMPLATES[self as usize]].1
    }

    /// The fields of the shader's `struct Params` (the layout its [`params`] struct packs).
    pub fn params_layout(self) -> &'static [ParamField] {
        TEMPLATE_INFO[TEMPLATES[self as usize]].2
    }

    /// Size of the packed uniform block in 32-bit words.
    pub fn params_words(self) -> usize {
        TEMPLATE_INFO[TEMPLATES[self as usize]].3
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Kernel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kernel::by_name(s).ok_or_else(|| format!("unknown kernel {s}"))
    }
}

impl serde::Serialize for Kernel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Kernel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Kernel;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a kernel name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Kernel, E> {
                Kernel::by_name(v).ok_or_else(|| E::custom(format!("unknown kernel {v}")))
            }
        }
        d.deserialize_str(V)
    }
}

/// The WGSL source of a shader variant.
pub fn source(name: &str) -> Option<&'static str> {
    Kernel::by_name(name).map(Kernel::source)
}

/// Writes every variant as `<name>.wgsl` into `dir` (for reading and diffing).
pub fn write_all(dir: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    for k in Kernel::ALL {
        std::fs::write(dir.join(format!("{}.wgsl", k.name())), k.source())?;
    }
    Ok(Kernel::ALL.len())
}

#[cfg(test)]
mod tests;
