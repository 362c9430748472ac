//! safetensors reader (the `safetensors` crate validates the header and offsets).
//! A `config.json` beside the file is attached to the model when present.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::{DType, Format, InputError, Model, Source, Storage, TensorEntry};

pub struct SafetensorsSource {
    /// Start of the data section in the file (8-byte length + JSON header).
    data_start: u64,
}

fn dtype_of(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::U8,
        Dtype::I8 => DType::I8,
        Dtype::I16 => DType::I16,
        Dtype::U16 => DType::U16,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::U32 => DType::U32,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::U64 => DType::U64,
        _ => return None,
    })
}

pub fn open(path: &Path) -> Result<Model, InputError> {
    let file = std::fs::File::open(path)
        .map_err(|e| InputError::new(path, format!("cannot open: {e}")))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| InputError::new(path, format!("cannot stat: {e}")))?
        .len();
    // SAFETY: the file is opened read-only and only read while this function runs; a
    // concurrent writer could change the bytes we hash, never memory safety of our own data.
    let mmap = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| InputError::new(path, format!("cannot map: {e}")))?;
    let st = SafeTensors::deserialize(&mmap)
        .map_err(|e| InputError::new(path, format!("not a valid safetensors file: {e}")))?;
    let (header_len, meta) = SafeTensors::read_metadata(&mmap)
        .map_err(|e| InputError::new(path, format!("not a valid safetensors file: {e}")))?;
    let data_start = 8 + header_len as u64;

    let mut tensors = Vec::new();
    for name in meta.offset_keys() {
        let view = st
            .tensor(&name)
            .map_err(|e| InputError::new(path, format!("tensor '{name}': {e}")))?;
        let dtype = dtype_of(view.dtype()).ok_or_else(|| {
            InputError::new(
                path,
                format!("tensor '{name}': dtype {:?} is not supported", view.dtype()),
            )
        })?;
        let info = meta.info(&name).expect("name from the same header");
        tensors.push(TensorEntry {
            name: name.clone(),
            shape: view.shape().iter().map(|&d| d as u64).collect(),
            dtype,
            storage: Storage::Safetensors {
                offset: info.data_offsets.0 as u64,
            },
            bytes: view.data().len() as u64,
            scope: String::new(),
            quantization: None,
        });
    }
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect()
        })
        .unwrap_or_default();

    let config_path = path.with_file_name("config.json");
    let config = if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| InputError::new(&config_path, format!("cannot read: {e}")))?;
        Some(
            serde_json::from_str(&text)
                .map_err(|e| InputError::new(&config_path, format!("not valid JSON: {e}")))?,
        )
    } else {
        None
    };

    Ok(Model {
        path: path.to_path_buf(),
        format: Format::Safetensors,
        file_bytes,
        tensors,
        graph: None,
        metadata,
        array_lengths: Default::default(),
        config,
        source: Source::Safetensors(SafetensorsSource { data_start }),
        derived: Default::default(),
    })
}

impl SafetensorsSource {
    pub(crate) fn read(&self, path: &Path, entry: &TensorEntry) -> Result<Vec<u8>, InputError> {
        let Storage::Safetensors { offset } = entry.storage else {
            return Err(InputError::new(
                path,
                format!("'{}' is not a safetensors tensor", entry.name),
            ));
        };
        crate::io::read_tensor_at(path, self.data_start + offset, entry)
    }
}
