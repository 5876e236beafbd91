//! `DType` for Kotlin and Swift: one method for the whole table row, and the two
//! lookups (uniffi gives enums methods but no static functions, so these stay free).

use super::types::DTypeInfo;
use crate::dtype::DType;
use crate::error::Result;

#[uniffi::export]
impl DType {
    /// Name, wire number, element size and predicates of this dtype.
    #[uniffi::method(name = "info")]
    fn ffi_info(&self) -> DTypeInfo {
        DTypeInfo {
            name: self.name().to_owned(),
            wire_value: self.wire(),
            element_size: self.element_size() as u32,
            is_float: self.is_float(),
            is_integer: self.is_integer(),
            is_signed: self.is_signed(),
        }
    }
}

/// The dtype of a wire number (protocol §7); unknown numbers are `UnsupportedDType`.
#[uniffi::export(name = "dtype_from_wire_value")]
fn ffi_dtype_from_wire_value(value: u8) -> Result<DType> {
    DType::from_wire(value)
}

/// The dtype of a name such as `"float32"`.
#[uniffi::export(name = "dtype_from_name")]
fn ffi_dtype_from_name(name: String) -> Result<DType> {
    DType::from_name(&name)
}
