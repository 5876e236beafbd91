//! `DType`: the one table of element types, their names, sizes, wire numbers
//! (protocol.md §7) and DLPack type codes.

use crate::error::{QuillError, Result};

/// Element type of a tensor.
///
/// ```
/// use quill::DType;
/// assert_eq!(DType::Float32.element_size(), 4);
/// assert_eq!(DType::from_wire(3).unwrap(), DType::Bfloat16);
/// assert_eq!(DType::from_name("bool").unwrap().name(), "bool");
/// assert_eq!(DType::Bfloat16.dlpack(), (4, 16, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    Float32,
    Float16,
    Bfloat16,
    Float64,
    Int8,
    Int32,
    Int64,
    Uint8,
    Bool,
}

/// One dtype's facts.
struct Row {
    dtype: DType,
    wire: u8,
    name: &'static str,
    size: usize,
    /// `DLDataTypeCode` of the DLPack header (0 int, 1 uint, 2 float, 4 bfloat, 6 bool);
    /// the bits are always `8 × size` and the lanes 1, so they are not stored again.
    dlpack_code: u8,
}

const fn row(dtype: DType, wire: u8, name: &'static str, size: usize, dlpack_code: u8) -> Row {
    Row {
        dtype,
        wire,
        name,
        size,
        dlpack_code,
    }
}

/// The single source of these facts.
const TABLE: [Row; 9] = [
    row(DType::Float32, 1, "float32", 4, 2),
    row(DType::Float16, 2, "float16", 2, 2),
    row(DType::Bfloat16, 3, "bfloat16", 2, 4),
    row(DType::Float64, 4, "float64", 8, 2),
    row(DType::Int8, 5, "int8", 1, 0),
    row(DType::Int32, 6, "int32", 4, 0),
    row(DType::Int64, 7, "int64", 8, 0),
    row(DType::Uint8, 8, "uint8", 1, 1),
    row(DType::Bool, 9, "bool", 1, 6),
];

impl DType {
    /// Every supported dtype, in wire-number order.
    pub const ALL: [DType; 9] = [
        DType::Float32,
        DType::Float16,
        DType::Bfloat16,
        DType::Float64,
        DType::Int8,
        DType::Int32,
        DType::Int64,
        DType::Uint8,
        DType::Bool,
    ];

    fn row(self) -> &'static Row {
        // The table is in declaration order, so the discriminant indexes it.
        &TABLE[self as usize]
    }

    /// Size of one element in bytes.
    pub fn element_size(self) -> usize {
        self.row().size
    }

    /// Canonical lower-case name (`"float32"`, `"bool"`, …).
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Number used on the wire (TENSOR_META `dtype` byte).
    pub fn wire(self) -> u8 {
        self.row().wire
    }

    /// The DLPack `DLDataType` as `(code, bits, lanes)`.
    ///
    /// ```
    /// use quill::DType;
    /// assert_eq!(DType::Float32.dlpack(), (2, 32, 1));
    /// assert_eq!(DType::Bool.dlpack(), (6, 8, 1));
    /// ```
    pub fn dlpack(self) -> (u8, u8, u16) {
        let r = self.row();
        // At most 8 bytes per element, so the bits fit in a u8.
        (r.dlpack_code, (r.size * 8) as u8, 1)
    }

    /// The dtype of a DLPack `DLDataType`; vector types (lanes ≠ 1) and codes or widths
    /// without a quill dtype (complex, uint16, float8, …) are errors.
    ///
    /// ```
    /// use quill::DType;
    /// assert_eq!(DType::from_dlpack(4, 16, 1).unwrap(), DType::Bfloat16);
    /// assert!(DType::from_dlpack(5, 64, 1).is_err()); // complex64
    /// ```
    pub fn from_dlpack(code: u8, bits: u8, lanes: u16) -> Result<DType> {
        TABLE
            .iter()
            .find(|r| lanes == 1 && (r.dlpack_code, r.size * 8) == (code, usize::from(bits)))
            .map(|r| r.dtype)
            .ok_or_else(|| QuillError::UnsupportedDType {
                reason: format!(
                    "unsupported DLPack dtype (code {code} {}, bits {bits}, lanes {lanes}); \
                     supported: {}",
                    dlpack_code_name(code),
                    TABLE.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
                ),
            })
    }

    /// The dtype of a wire number; 0 ("invalid") and unknown numbers are errors.
    pub fn from_wire(value: u8) -> Result<DType> {
        TABLE
            .iter()
            .find(|r| r.wire == value)
            .map(|r| r.dtype)
            .ok_or_else(|| QuillError::UnsupportedDType {
                reason: format!("unknown dtype number {value} (expected 1..=9, see protocol §7)"),
            })
    }

    /// The dtype of a name; accepts the canonical names plus `"bool_"`.
    pub fn from_name(name: &str) -> Result<DType> {
        let name = if name == "bool_" { "bool" } else { name };
        TABLE
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.dtype)
            .ok_or_else(|| QuillError::UnsupportedDType {
                reason: format!(
                    "unsupported dtype {name:?} (expected one of: {})",
                    TABLE.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
                ),
            })
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::Float32 | DType::Float16 | DType::Bfloat16 | DType::Float64
        )
    }

    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DType::Int8 | DType::Int32 | DType::Int64 | DType::Uint8
        )
    }

    /// Whether the type can hold negative values (floats and signed integers).
    pub fn is_signed(self) -> bool {
        self.is_float() || matches!(self, DType::Int8 | DType::Int32 | DType::Int64)
    }
}

/// The header's name of a `DLDataTypeCode`, for error messages.
fn dlpack_code_name(code: u8) -> &'static str {
    match code {
        0 => "kDLInt",
        1 => "kDLUInt",
        2 => "kDLFloat",
        3 => "kDLOpaqueHandle",
        4 => "kDLBfloat",
        5 => "kDLComplex",
        6 => "kDLBool",
        7..=14 => "kDLFloat8_*",
        15 | 16 => "kDLFloat6_*",
        17 => "kDLFloat4_e2m1fn",
        _ => "unknown",
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_protocol_section_7() {
        let expect = [
            ("float32", 1, 4),
            ("float16", 2, 2),
            ("bfloat16", 3, 2),
            ("float64", 4, 8),
            ("int8", 5, 1),
            ("int32", 6, 4),
            ("int64", 7, 8),
            ("uint8", 8, 1),
            ("bool", 9, 1),
        ];
        for (d, (name, wire, size)) in DType::ALL.iter().zip(expect) {
            assert_eq!(d.name(), name);
            assert_eq!(d.wire(), wire);
            assert_eq!(d.element_size(), size);
            assert_eq!(DType::from_wire(wire).unwrap(), *d);
            assert_eq!(DType::from_name(name).unwrap(), *d);
        }
    }

    #[test]
    fn dlpack_codes_match_the_dlpack_header() {
        // (code, bits) from dlpack.h: kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBfloat 4, kDLBool 6.
        let expect = [
            (2, 32),
            (2, 16),
            (4, 16),
            (2, 64),
            (0, 8),
            (0, 32),
            (0, 64),
            (1, 8),
            (6, 8),
        ];
        for (d, (code, bits)) in DType::ALL.iter().zip(expect) {
            assert_eq!(d.dlpack(), (code, bits, 1), "{d}");
            assert_eq!(DType::from_dlpack(code, bits, 1).unwrap(), *d);
        }
        for (code, bits, lanes) in [(2, 32, 4), (1, 16, 1), (5, 64, 1), (6, 1, 1), (3, 64, 1)] {
            let e = DType::from_dlpack(code, bits, lanes).unwrap_err();
            assert!(matches!(e, QuillError::UnsupportedDType { .. }), "{e}");
        }
        let e = DType::from_dlpack(5, 128, 1).unwrap_err().to_string();
        assert!(e.contains("kDLComplex") && e.contains("bits 128"), "{e}");
    }

    #[test]
    fn invalid_and_unknown_numbers_are_errors() {
        for v in [0u8, 10, 255] {
            assert!(matches!(
                DType::from_wire(v),
                Err(QuillError::UnsupportedDType { .. })
            ));
        }
        assert!(matches!(
            DType::from_name("complex64"),
            Err(QuillError::UnsupportedDType { .. })
        ));
    }

    #[test]
    fn predicates() {
        assert!(DType::Float32.is_float() && DType::Float32.is_signed());
        assert!(DType::Uint8.is_integer() && !DType::Uint8.is_signed());
        assert!(!DType::Bool.is_integer() && !DType::Bool.is_float() && !DType::Bool.is_signed());
        assert!(DType::Int8.is_signed());
    }
}
