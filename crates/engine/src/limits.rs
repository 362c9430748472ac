//! Device limits (method phase 4.5): what a plan needs from a WebGPU device, checked at
//! port time against profiles of the devices users run on, so a model that cannot run on a
//! phone is known before anyone opens it there.
//!
//! The profiles are representative figures, not guarantees: `webgpu-default` is the
//! WebGPU specification's default for every limit (what any device offers); `compat` the
//! defaults of WebGPU compatibility mode (older Android GPUs through OpenGL ES); the others
//! are what common browsers report on such devices (see webgpureport.org for a given
//! device). A package requests exactly the limits its plan needs (`requestDevice` in
//! `runtime.ts`), so a device below a need fails at load with `missing-limit`.

use serde::Serialize;

use crate::plan::Plan;

/// The limits m2w's plans depend on (WebGPU names in the JSON report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u64,
    pub max_compute_invocations_per_workgroup: u64,
    pub max_storage_buffers_per_shader_stage: u64,
    pub max_compute_workgroups_per_dimension: u64,
}

/// A named device class and its limits.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub description: &'static str,
    pub limits: Limits,
}

const MIB: u64 = 1 << 20;

/// The device classes a port is checked against.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "webgpu-default",
        description: "WebGPU's default limits: what every conforming device offers",
        limits: Limits {
            max_storage_buffer_binding_size: 128 * MIB,
            max_buffer_size: 256 * MIB,
            max_compute_workgroup_storage_size: 16384,
            max_compute_invocations_per_workgroup: 256,
            max_storage_buffers_per_shader_stage: 8,
            max_compute_workgroups_per_dimension: 65535,
        },
    },
    Profile {
        name: "compat",
        description: "WebGPU compatibility mode's defaults (older Android GPUs on OpenGL ES)",
        limits: Limits {
            max_storage_buffer_binding_size: 128 * MIB,
            max_buffer_size: 256 * MIB,
            max_compute_workgroup_storage_size: 16384,
            max_compute_invocations_per_workgroup: 128,
            max_storage_buffers_per_shader_stage: 4,
            max_compute_workgroups_per_dimension: 65535,
        },
    },
    Profile {
        name: "ios-safari",
        description: "Safari on a recent iPhone (Apple GPU through Metal)",
        limits: Limits {
            max_storage_buffer_binding_size: 256 * MIB,
            max_buffer_size: 256 * MIB,
            max_compute_workgroup_storage_size: 32768,
            max_compute_invocations_per_workgroup: 1024,
            max_storage_buffers_per_shader_stage: 10,
            max_compute_workgroups_per_dimension: 65535,
        },
    },
    Profile {
        name: "android-chrome",
        description: "Chrome on a mid-range Android phone (Mali or Adreno through Vulkan)",
        limits: Limits {
            max_storage_buffer_binding_size: 128 * MIB,
            max_buffer_size: 256 * MIB,
            max_compute_workgroup_storage_size: 32768,
            max_compute_invocations_per_workgroup: 256,
            max_storage_buffers_per_shader_stage: 8,
            max_compute_workgroups_per_dimension: 65535,
        },
    },
    Profile {
        name: "desktop",
        description: "Chrome on a desktop discrete GPU (D3D12 or Vulkan)",
        limits: Limits {
            max_storage_buffer_binding_size: 2048 * MIB - 4,
            max_buffer_size: 2048 * MIB,
            max_compute_workgroup_storage_size: 32768,
            max_compute_invocations_per_workgroup: 1024,
            max_storage_buffers_per_shader_stage: 10,
            max_compute_workgroups_per_dimension: 65535,
        },
    },
];

/// The profile named `name`.
pub fn profile(name: &str) -> Result<&'static Profile, String> {
    PROFILES.iter().find(|p| p.name == name).ok_or_else(|| {
        format!(
            "no device profile {name:?}: one of {}",
            PROFILES
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// One limit a plan needs: the value and what needs it most (a tensor, kernel or node).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Need {
    pub limit: &'static str,
    pub value: u64,
    pub by: String,
}

/// Every limit the plans need, at the dims' maxima.
pub fn needs(plans: &[&Plan]) -> Vec<Need> {
    let mut out: Vec<Need> = Vec::new();
    let mut need = |limit: &'static str, value: u64, by: String| match out
        .iter_mut()
        .find(|n| n.limit == limit)
    {
        Some(n) if n.value >= value => {}
        Some(n) => {
            n.value = value;
            n.by = by;
        }
        None => out.push(Need { limit, value, by }),
    };
    for plan in plans {
        let max = plan.max_bindings();
        // Buffers are bound whole: a slot's size is its biggest tenant's.
        for slot in &plan.buffers {
            let by = format!("buffer of {}", slot.tensors.join(", "));
            need("maxStorageBufferBindingSize", slot.bytes, by.clone());
            need("maxBufferSize", slot.bytes, by);
        }
        for (name, t) in &plan.tensors {
            if t.base == *name {
                let bytes = plan.max_bytes(name, &max);
                need(
                    "maxStorageBufferBindingSize",
                    bytes,
                    format!("tensor {name}"),
                );
                need("maxBufferSize", bytes, format!("tensor {name}"));
            }
        }
        for d in &plan.dispatches {
            let k = d.kernel;
            need(
                "maxComputeWorkgroupStorageSize",
                k.workgroup_bytes() as u64,
                format!("kernel {}", k.name()),
            );
            if let Some(n) = workgroup_invocations(k.source()) {
                need(
                    "maxComputeInvocationsPerWorkgroup",
                    n,
                    format!("kernel {}", k.name()),
                );
            }
            // Dummies are bound too; the uniform block is not a storage buffer.
            let storage = d.bindings.len() as u64;
            need(
                "maxStorageBuffersPerShaderStage",
                storage,
                format!("node {} ({})", d.node, k.name()),
            );
            let groups = d.workgroups_at(&max).unwrap_or(d.workgroups);
            need(
                "maxComputeWorkgroupsPerDimension",
                groups.iter().copied().max().unwrap_or(0) as u64,
                format!("node {} ({})", d.node, k.name()),
            );
        }
    }
    out
}

/// The product of a WGSL entry point's `@workgroup_size(x, y, z)` (literal sizes, or
/// names of `const`s declared in the shader); None when it cannot be read.
pub fn workgroup_invocations(source: &str) -> Option<u64> {
    let at = source.find("@workgroup_size(")? + "@workgroup_size(".len();
    let args = &source[at..at + source[at..].find(')')?];
    let value = |a: &str| -> Option<u64> {
        let a = a.trim().trim_end_matches('u');
        if let Ok(v) = a.parse() {
            return Some(v);
        }
        let decl = format!("const {a}");
        let line = source.lines().find(|l| l.trim_start().starts_with(&decl))?;
        let v = line.split('=').nth(1)?.trim().trim_end_matches(';').trim();
        v.trim_end_matches('u').parse().ok()
    };
    args.split(',')
        .filter(|a| !a.trim().is_empty())
        .map(value)
        .try_fold(1u64, |p, v| Some(p * v?))
}

/// A profile checked: the needs it does not meet (empty when the plan fits).
#[derive(Clone, Debug, Serialize)]
pub struct ProfileCheck {
    pub profile: &'static str,
    pub description: &'static str,
    pub fits: bool,
    /// (need, what the profile offers).
    pub short: Vec<(Need, u64)>,
}

/// The limits report: what the plans need, and each profile's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct LimitsReport {
    pub schema: &'static str,
    pub needs: Vec<Need>,
    pub profiles: Vec<ProfileCheck>,
}

/// The report's file in an engine folder (and in a package).
pub const FILE: &str = "limits.json";

impl LimitsReport {
    pub fn to_json(&self) -> Vec<u8> {
        (serde_json::to_string_pretty(self).expect("report serialises") + "\n").into_bytes()
    }

    pub fn new(plans: &[&Plan]) -> LimitsReport {
        let needs = needs(plans);
        let profiles = PROFILES
            .iter()
            .map(|p| {
                let short: Vec<(Need, u64)> = needs
                    .iter()
                    .filter_map(|n| {
                        let got = offered(&p.limits, n.limit)?;
                        (n.value > got).then(|| (n.clone(), got))
                    })
                    .collect();
                ProfileCheck {
                    profile: p.name,
                    description: p.description,
                    fits: short.is_empty(),
                    short,
                }
            })
            .collect();
        LimitsReport {
            schema: "m2w.limits/1",
            needs,
            profiles,
        }
    }

    /// One line per profile: "fits", or each limit it lacks, with what needs it.
    pub fn summary(&self) -> Vec<String> {
        self.profiles
            .iter()
            .map(|p| {
                if p.fits {
                    format!("{:<15} fits", p.profile)
                } else {
                    let why: Vec<String> = p
                        .short
                        .iter()
                        .map(|(n, got)| format!("{} {} > {} ({})", n.limit, n.value, got, n.by))
                        .collect();
                    format!("{:<15} FAILS: {}", p.profile, why.join("; "))
                }
            })
            .collect()
    }
}

/// A profile's value of `limit` (WebGPU name).
pub fn offered(l: &Limits, limit: &str) -> Option<u64> {
    Some(match limit {
        "maxStorageBufferBindingSize" => l.max_storage_buffer_binding_size,
        "maxBufferSize" => l.max_buffer_size,
        "maxComputeWorkgroupStorageSize" => l.max_compute_workgroup_storage_size,
        "maxComputeInvocationsPerWorkgroup" => l.max_compute_invocations_per_workgroup,
        "maxStorageBuffersPerShaderStage" => l.max_storage_buffers_per_shader_stage,
        "maxComputeWorkgroupsPerDimension" => l.max_compute_workgroups_per_dimension,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workgroup_sizes_are_read_from_literals_and_consts() {
        assert_eq!(
            workgroup_invocations("@compute @workgroup_size(64) fn main() {}"),
            Some(64)
        );
        assert_eq!(
            workgroup_invocations("const WG = 16u;\n@compute @workgroup_size(WG, WG, 1) fn f() {}"),
            Some(256)
        );
        assert_eq!(workgroup_invocations("@workgroup_size(N) fn f() {}"), None);
    }

    #[test]
    fn every_kernel_has_a_readable_workgroup_size_within_the_default() {
        for &k in m2w_kernels::Kernel::ALL {
            let n = workgroup_invocations(k.source())
                .unwrap_or_else(|| panic!("{}: workgroup size not read", k.name()));
            assert!(n <= 256, "{}: {n} invocations", k.name());
        }
    }

    #[test]
    fn the_default_profile_is_the_least_of_every_limit() {
        let d = profile("webgpu-default").unwrap().limits;
        for p in PROFILES.iter().filter(|p| p.name != "compat") {
            for limit in [
                "maxStorageBufferBindingSize",
                "maxBufferSize",
                "maxComputeWorkgroupStorageSize",
                "maxComputeInvocationsPerWorkgroup",
                "maxStorageBuffersPerShaderStage",
            ] {
                assert!(
                    offered(&p.limits, limit) >= offered(&d, limit),
                    "{} {limit}",
                    p.name
                );
            }
        }
        assert!(profile("nokia").unwrap_err().contains("webgpu-default"));
    }
}
