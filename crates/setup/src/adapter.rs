//! Is there a WebGPU adapter here? wgpu answers natively (Vulkan/Metal/DX12); on machines
//! without a GPU, Mesa's lavapipe provides a CPU Vulkan device, good for correctness only.

/// What the probe found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub is_cpu: bool,
}

/// Asks wgpu for the best adapter. None when no backend offers one.
pub fn probe() -> Option<AdapterReport> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::PRIMARY;
    }
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .ok()?;
    let info = adapter.get_info();
    let limits = adapter.limits();
    Some(AdapterReport {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
        max_buffer_size: limits.max_buffer_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        is_cpu: info.device_type == wgpu::DeviceType::Cpu,
    })
}

/// The command that installs a CPU WebGPU adapter (lavapipe) on Debian/Ubuntu.
pub const LAVAPIPE_INSTALL: &str = "apt-get install -y mesa-vulkan-drivers libvulkan1";

/// Probes; when nothing is found on Debian as root, installs lavapipe and probes again.
/// Returns the report or a message saying exactly what to run.
pub fn ensure() -> Result<AdapterReport, String> {
    if let Some(r) = probe() {
        return Ok(r);
    }
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let has_apt = std::path::Path::new("/usr/bin/apt-get").exists();
    if is_root && has_apt {
        eprintln!("m2w: no WebGPU adapter; installing Mesa lavapipe ({LAVAPIPE_INSTALL})");
        let _progress = m2w_progress::task("install Mesa lavapipe (apt)", None);
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("(apt-get install -y -q mesa-vulkan-drivers libvulkan1 || (apt-get update -q && {LAVAPIPE_INSTALL})) >/dev/null"))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if status.map(|s| s.success()).unwrap_or(false)
            && let Some(r) = probe()
        {
            return Ok(r);
        }
    }
    Err(format!(
        "no WebGPU adapter found. On Debian/Ubuntu run as root: {LAVAPIPE_INSTALL} (a CPU Vulkan driver); elsewhere install your GPU's Vulkan driver."
    ))
}

/// Headless Chromium for the browser tests of generated packages (Debian's `chromium`).
/// Installs it as root on Debian when missing; otherwise says what to run.
pub fn ensure_chromium() -> Result<String, String> {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if std::path::Path::new(&path).exists() {
        return Ok(path);
    }
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root && std::path::Path::new("/usr/bin/apt-get").exists() {
        eprintln!(
            "m2w: installing Debian chromium for the browser tests (apt-get install -y chromium)"
        );
        let _progress = m2w_progress::task("install chromium (apt)", None);
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg("(apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok && std::path::Path::new(&path).exists() {
            return Ok(path);
        }
    }
    Err(format!(
        "no {path}: the browser tests need Chromium (Debian: apt-get install -y chromium, or set CHROMIUM)"
    ))
}
