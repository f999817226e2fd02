//! The 8-, 4- and 2-bit element types: decoding bit patterns and rounding values into them.

use crate::dtype::DType;

/// Rounding of a value that falls between two representable ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// To nearest, ties to even.
    Nearest,
    /// Towards +infinity (the E8M0 default).
    Up,
    /// Towards zero.
    Down,
}

/// How a format spends its top codes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Specials {
    /// IEEE-style: the all-ones exponent holds infinity and NaNs (E5M2).
    Ieee,
    /// Finite only, with NaN at S.1111.111 (E4M3FN).
    FiniteNan,
    /// Finite only, with the single NaN at the negative-zero pattern 0x80 (the FNUZ types).
    NegativeZeroNan,
    /// Finite only, no NaN at all (E2M1).
    None,
}

#[derive(Clone, Copy)]
struct Format {
    exponent_bits: u32,
    mantissa_bits: u32,
    bias: i32,
    specials: Specials,
}

impl Format {
    fn of(dtype: DType) -> Option<Format> {
        let f = |exponent_bits, mantissa_bits, bias, specials| Format {
            exponent_bits,
            mantissa_bits,
            bias,
            specials,
        };
        Some(match dtype {
            DType::F8E4M3FN => f(4, 3, 7, Specials::FiniteNan),
            DType::F8E4M3FNUZ => f(4, 3, 8, Specials::NegativeZeroNan),
            DType::F8E5M2 => f(5, 2, 15, Specials::Ieee),
            DType::F8E5M2FNUZ => f(5, 2, 16, Specials::NegativeZeroNan),
            DType::F4E2M1 => f(2, 1, 1, Specials::None),
            _ => return None,
        })
    }

    fn sign_bit(self) -> u8 {
        1 << (self.exponent_bits + self.mantissa_bits)
    }

    /// The largest finite magnitude's code.
    fn max_code(self) -> u8 {
        let magnitudes = (1u16 << (self.exponent_bits + self.mantissa_bits)) as u8;
        match self.specials {
            Specials::Ieee => (((1 << self.exponent_bits) - 1) << self.mantissa_bits) - 1,
            Specials::FiniteNan => magnitudes - 2,
            Specials::NegativeZeroNan | Specials::None => magnitudes - 1,
        }
    }

    /// The smallest normal exponent.
    fn min_exponent(self) -> i32 {
        1 - self.bias
    }

    /// The code for a value too large to represent, with the sign already chosen.
    fn overflow(self, sign: u8, saturate: bool) -> u8 {
        if saturate || self.specials == Specials::None {
            return sign | self.max_code();
        }
        match self.specials {
            Specials::Ieee => sign | (((1 << self.exponent_bits) - 1) << self.mantissa_bits),
            Specials::FiniteNan => sign | (self.sign_bit() - 1),
            _ => 0x80,
        }
    }

    fn nan(self) -> u8 {
        match self.specials {
            // The quiet NaN: all-ones exponent, top mantissa bit (what f32's NaN narrows to).
            Specials::Ieee => {
                (((1 << self.exponent_bits) - 1) << self.mantissa_bits)
                    | (1 << (self.mantissa_bits - 1))
            }
            Specials::FiniteNan => self.sign_bit() - 1,
            Specials::NegativeZeroNan => 0x80,
            // E2M1 has no NaN; like ml_dtypes, it becomes negative zero.
            Specials::None => self.sign_bit(),
        }
    }

    fn decode(self, bits: u8) -> f64 {
        if self.specials == Specials::NegativeZeroNan && bits == 0x80 {
            return f64::NAN;
        }
        let negative = bits & self.sign_bit() != 0;
        let magnitude_bits = bits & (self.sign_bit() - 1);
        let exponent = i32::from(magnitude_bits >> self.mantissa_bits);
        let mantissa = f64::from(magnitude_bits & ((1 << self.mantissa_bits) - 1));
        let all_ones = (1 << self.exponent_bits) - 1;
        let magnitude = if self.specials == Specials::Ieee && exponent == all_ones {
            if mantissa == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        } else if self.specials == Specials::FiniteNan && magnitude_bits == self.sign_bit() - 1 {
            f64::NAN
        } else if exponent == 0 {
            mantissa * 2f64.powi(self.min_exponent() - self.mantissa_bits as i32)
        } else {
            (1.0 + mantissa / f64::from(1u32 << self.mantissa_bits))
                * 2f64.powi(exponent - self.bias)
        };
        if negative {
            -magnitude
        } else {
            magnitude
        }
    }

    fn encode(self, x: f64, saturate: bool) -> u8 {
        if x.is_nan() {
            return self.nan();
        }
        let magnitude = x.abs();
        let sign = if x.is_sign_negative() {
            self.sign_bit()
        } else {
            0
        };
        if magnitude.is_infinite() {
            return self.overflow(sign, saturate);
        }
        // Quantum of the binade holding `magnitude` (the subnormal one below the normals).
        let binade = ((magnitude.to_bits() >> 52) as i32 - 1023).max(self.min_exponent());
        let quantum = 2f64.powi(binade - self.mantissa_bits as i32);
        let steps = round_half_even(magnitude / quantum) as u64;
        // Within the lowest binade the code is the step count; each binade above adds 2^m codes.
        let code = (((binade - self.min_exponent()) as u64) << self.mantissa_bits) + steps;
        if code > u64::from(self.max_code()) {
            return self.overflow(sign, saturate);
        }
        if code == 0 && self.specials == Specials::NegativeZeroNan {
            return 0;
        }
        sign | code as u8
    }
}

/// Rounds f32 values to one FP8 or FP4 type, as [`encode`] does, without leaving f32's bits
/// and without branches on the value.
#[derive(Clone, Copy)]
pub struct F32Encoder {
    format: Format,
    /// The codes of a positive and a negative value beyond the largest finite one.
    overflow: [u8; 2],
    nan: u8,
}

impl F32Encoder {
    /// The encoder for `dtype`, or `None` where it is not an FP8/FP4 type.
    pub fn new(dtype: DType, saturate: bool) -> Option<F32Encoder> {
        Format::of(dtype).map(|format| F32Encoder {
            format,
            overflow: [
                format.overflow(0, saturate),
                format.overflow(format.sign_bit(), saturate),
            ],
            nan: format.nan(),
        })
    }

    /// The bit pattern nearest to `x` (ties to even); out-of-range values saturate or become
    /// inf/NaN.
    #[inline]
    pub fn encode(&self, x: f32) -> u8 {
        let f = self.format;
        let bits = x.to_bits();
        let negative = (bits >> 31) as usize;
        let magnitude = bits & 0x7FFF_FFFF;
        let biased = (magnitude >> 23) as i32;
        // |x| = significand · 2^(exponent - 23), subnormals included.
        let exponent = biased.max(1) - 127;
        let significand = (magnitude & 0x7F_FFFF) | (u32::from(biased != 0) << 23);
        let binade = exponent.max(f.min_exponent());
        // Steps of the binade's quantum 2^(binade - m): the significand shifted right, rounded
        // half to even on the bits shifted out (a shift of 31 leaves nothing, as a longer one).
        let shift = ((binade - f.mantissa_bits as i32) - (exponent - 23)).clamp(1, 31) as u32;
        let kept = significand >> shift;
        let rest = significand & ((1u32 << shift) - 1);
        let half = 1u32 << (shift - 1);
        let up = (rest > half) | ((rest == half) & (kept & 1 == 1));
        let code = (((binade - f.min_exponent()) as u32) << f.mantissa_bits) + kept + u32::from(up);
        let sign = (negative as u8) << (f.exponent_bits + f.mantissa_bits);
        let finite = if code > u32::from(f.max_code()) {
            self.overflow[negative]
        } else if code == 0 && f.specials == Specials::NegativeZeroNan {
            0
        } else {
            sign | code as u8
        };
        match magnitude {
            m if m > 0x7F80_0000 => self.nan,
            0x7F80_0000 => self.overflow[negative],
            _ => finite,
        }
    }
}

/// The range of an integer type, within i64 (`u64` stops at `i64::MAX`); the whole of i64 for
/// other types.
pub fn int_range(dtype: DType) -> (i64, i64) {
    match dtype {
        DType::I2 => (-2, 1),
        DType::U2 => (0, 3),
        DType::I4 => (-8, 7),
        DType::U4 => (0, 15),
        DType::I8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
        DType::U8 => (0, i64::from(u8::MAX)),
        DType::I16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        DType::U16 => (0, i64::from(u16::MAX)),
        DType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        DType::U32 => (0, i64::from(u32::MAX)),
        DType::U64 => (0, i64::MAX),
        DType::Bool => (0, 1),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Rounds half to even.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// The largest finite value of a float type (`None` for the others).
pub fn max_finite(dtype: DType) -> Option<f64> {
    match dtype {
        DType::F32 => Some(f64::from(f32::MAX)),
        DType::F16 => Some(65504.0),
        DType::BF16 => Some(f64::from(half::bf16::MAX)),
        DType::F8E8M0 => Some(2f64.powi(127)),
        _ => Format::of(dtype).map(|f| f.decode(f.max_code())),
    }
}

/// The value of one element's bit pattern.
pub fn decode(dtype: DType, bits: u8) -> f64 {
    match dtype {
        DType::I4 => f64::from(((bits << 4) as i8) >> 4),
        DType::I2 => f64::from(((bits << 6) as i8) >> 6),
        DType::U4 | DType::U2 => f64::from(bits),
        DType::F8E8M0 => {
            if bits == 0xFF {
                f64::NAN
            } else {
                2f64.powi(i32::from(bits) - 127)
            }
        }
        _ => Format::of(dtype).map_or(f64::NAN, |f| f.decode(bits)),
    }
}

/// The bit pattern nearest to `x`; out-of-range values saturate or become inf/NaN.
pub fn encode(dtype: DType, x: f64, saturate: bool, rounding: Rounding) -> u8 {
    match dtype {
        DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
            // Like numpy's astype: truncate, then keep the low bits (wrapping).
            let v = if x.is_finite() { x.trunc() as i64 } else { 0 };
            (v as u8) & (((1u16 << dtype.bits()) - 1) as u8)
        }
        DType::F8E8M0 => encode_e8m0(x, rounding),
        _ => Format::of(dtype).map_or(0, |f| f.encode(x, saturate)),
    }
}

fn encode_e8m0(x: f64, rounding: Rounding) -> u8 {
    if x.is_nan() || x.is_infinite() || x <= 0.0 {
        return if x == 0.0 { 0 } else { 0xFF };
    }
    let log = x.log2();
    let exponent = match rounding {
        Rounding::Up => log.ceil(),
        Rounding::Down => log.floor(),
        Rounding::Nearest => {
            let low = log.floor();
            let (a, b) = (2f64.powf(low), 2f64.powf(low + 1.0));
            if x - a < b - x {
                low
            } else {
                low + 1.0
            }
        }
    };
    (exponent + 127.0).clamp(0.0, 254.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3fn_round_trip_and_limits() {
        for code in 0..=255u8 {
            let v = decode(DType::F8E4M3FN, code);
            if !v.is_nan() {
                assert_eq!(encode(DType::F8E4M3FN, v, true, Rounding::Nearest), code);
            }
        }
        assert_eq!(max_finite(DType::F8E4M3FN), Some(448.0));
        assert_eq!(
            encode(DType::F8E4M3FN, 1000.0, true, Rounding::Nearest),
            0x7E
        );
        let overflowed = encode(DType::F8E4M3FN, 1000.0, false, Rounding::Nearest);
        assert!(decode(DType::F8E4M3FN, overflowed).is_nan());
        let e5m2 = encode(DType::F8E5M2, 1e6, false, Rounding::Nearest);
        assert_eq!(decode(DType::F8E5M2, e5m2), f64::INFINITY);
    }

    #[test]
    fn f32_encoder_matches_encode() {
        // Every sign and exponent with the top nine fraction bits (the rounding bit of every
        // format and binade is among them), each with no, low, middle and all sticky bits below.
        let low = [0u32, 1, 0x2000, 0x3FFF];
        let dtypes = [
            DType::F8E4M3FN,
            DType::F8E4M3FNUZ,
            DType::F8E5M2,
            DType::F8E5M2FNUZ,
            DType::F4E2M1,
        ];
        for dtype in dtypes {
            for saturate in [false, true] {
                let fast = F32Encoder::new(dtype, saturate).expect("an FP8/FP4 type");
                for high in 0..(1u32 << 18) {
                    for &l in &low {
                        let x = f32::from_bits((high << 14) | l);
                        let want = encode(dtype, f64::from(x), saturate, Rounding::Nearest);
                        assert_eq!(fast.encode(x), want, "{dtype:?} {x:e}");
                    }
                }
            }
        }
        assert!(F32Encoder::new(DType::I8, true).is_none());
    }

    #[test]
    fn fp4_values() {
        let values: Vec<f64> = (0..8).map(|c| decode(DType::F4E2M1, c)).collect();
        assert_eq!(values, vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(encode(DType::F4E2M1, 2.5, true, Rounding::Nearest), 4);
        assert_eq!(encode(DType::F4E2M1, -7.0, true, Rounding::Nearest), 0xF);
        assert_eq!(encode(DType::F4E2M1, 0.25, true, Rounding::Nearest), 0);
        assert_eq!(encode(DType::F4E2M1, 0.26, true, Rounding::Nearest), 1);
    }

    #[test]
    fn fnuz_has_no_negative_zero() {
        assert_eq!(encode(DType::F8E4M3FNUZ, -0.0, false, Rounding::Nearest), 0);
        assert_eq!(
            encode(DType::F8E5M2FNUZ, -1e-9, false, Rounding::Nearest),
            0
        );
        assert!(decode(DType::F8E4M3FNUZ, 0x80).is_nan());
    }
}
