//! The 8-, 4- and 2-bit element types: decoding bit patterns and rounding values into them.

use sparkc_ir::DType;

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

struct Format {
    exponent_bits: u32,
    mantissa_bits: u32,
    bias: i32,
    /// IEEE-style: all-ones exponent is inf/NaN.
    ieee: bool,
    /// Only NaN is the pattern 0x80 (the "FNUZ" types).
    nan_is_negative_zero: bool,
}

fn format(dtype: DType) -> Option<Format> {
    let f = |exponent_bits, mantissa_bits, bias, ieee, nan_is_negative_zero| Format {
        exponent_bits,
        mantissa_bits,
        bias,
        ieee,
        nan_is_negative_zero,
    };
    Some(match dtype {
        DType::F8E4M3FN => f(4, 3, 7, false, false),
        DType::F8E4M3FNUZ => f(4, 3, 8, false, true),
        DType::F8E5M2 => f(5, 2, 15, true, false),
        DType::F8E5M2FNUZ => f(5, 2, 16, false, true),
        DType::F4E2M1 => f(2, 1, 1, false, false),
        _ => return None,
    })
}

/// The range of the sub-byte integer types.
pub fn int_range(dtype: DType) -> (i64, i64) {
    match dtype {
        DType::I4 => (-8, 7),
        DType::U4 => (0, 15),
        DType::I2 => (-2, 1),
        DType::U2 => (0, 3),
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
        _ => match format(dtype) {
            Some(f) => decode_float(&f, bits),
            None => f64::NAN,
        },
    }
}

fn decode_float(f: &Format, bits: u8) -> f64 {
    let total = 1 + f.exponent_bits + f.mantissa_bits;
    let sign_bit = 1u8 << (total - 1);
    if f.nan_is_negative_zero && bits == 0x80 {
        return f64::NAN;
    }
    let negative = bits & sign_bit != 0;
    let exponent = i32::from((bits >> f.mantissa_bits) & ((1 << f.exponent_bits) - 1) as u8);
    let mantissa = i32::from(bits & ((1 << f.mantissa_bits) - 1) as u8);
    let all_ones = (1 << f.exponent_bits) - 1;
    let magnitude = if f.ieee && exponent == all_ones {
        if mantissa == 0 {
            f64::INFINITY
        } else {
            f64::NAN
        }
    } else if !f.ieee
        && !f.nan_is_negative_zero
        && f.exponent_bits == 4
        && exponent == all_ones
        && mantissa == (1 << f.mantissa_bits) - 1
    {
        f64::NAN
    } else if exponent == 0 {
        f64::from(mantissa) * 2f64.powi(1 - f.bias - f.mantissa_bits as i32)
    } else {
        (1.0 + f64::from(mantissa) / f64::from(1 << f.mantissa_bits)) * 2f64.powi(exponent - f.bias)
    };
    if negative {
        -magnitude
    } else {
        magnitude
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
        _ => match format(dtype) {
            Some(f) => encode_float(&f, x, saturate),
            None => 0,
        },
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

fn encode_float(f: &Format, x: f64, saturate: bool) -> u8 {
    let total = 1 + f.exponent_bits + f.mantissa_bits;
    let sign_bit = 1u8 << (total - 1);
    let codes = 1u16 << (total - 1);
    let nan = if f.nan_is_negative_zero {
        0x80
    } else if f.ieee {
        (sign_bit - 1) | sign_bit
    } else if total == 8 {
        0x7F
    } else {
        sign_bit - 1
    };
    if x.is_nan() {
        // FP4 has no NaN: the reference maps it to negative zero.
        return if total == 4 { sign_bit } else { nan };
    }
    let negative = x.is_sign_negative();
    let magnitude = x.abs();
    let sign = if negative && !(f.nan_is_negative_zero && magnitude == 0.0) {
        sign_bit
    } else {
        0
    };
    // The largest finite code, and the value just above it (where rounding would go next).
    let finite: Vec<(u8, f64)> = (0..codes as u8)
        .map(|c| (c, decode_float(f, c)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    let &(max_code, max) = finite.last().expect("some finite codes");
    let top_ulp = 2f64.powi((max.log2().floor() as i32).max(1 - f.bias) - f.mantissa_bits as i32);
    let overflow = |sign: u8| -> u8 {
        if saturate {
            sign | max_code
        } else if f.ieee {
            sign | (((1u8 << f.exponent_bits) - 1) << f.mantissa_bits)
        } else {
            nan
        }
    };
    if magnitude.is_infinite() {
        return if total == 4 {
            sign | max_code
        } else {
            overflow(sign)
        };
    }
    if magnitude > max {
        return if magnitude < max + top_ulp / 2.0
            || (magnitude == max + top_ulp / 2.0 && max_code % 2 == 0)
        {
            sign | max_code
        } else {
            overflow(sign)
        };
    }
    let upper = finite.partition_point(|&(_, v)| v < magnitude);
    let (code, value) = finite[upper];
    if value == magnitude || upper == 0 {
        return sign | code;
    }
    let (low_code, low) = finite[upper - 1];
    let chosen = if magnitude - low < value - magnitude {
        low_code
    } else if magnitude - low > value - magnitude {
        code
    } else if low_code % 2 == 0 {
        low_code
    } else {
        code
    };
    if chosen == 0 && f.nan_is_negative_zero {
        0
    } else {
        sign | chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3fn_round_trip_and_limits() {
        for code in 0..=255u8 {
            let v = decode(DType::F8E4M3FN, code);
            if v.is_finite() && code != 0x80 {
                assert_eq!(encode(DType::F8E4M3FN, v, true, Rounding::Nearest), code);
            }
        }
        assert_eq!(decode(DType::F8E4M3FN, 0x7E), 448.0);
        assert_eq!(
            encode(DType::F8E4M3FN, 1000.0, true, Rounding::Nearest),
            0x7E
        );
        assert!(decode(
            DType::F8E4M3FN,
            encode(DType::F8E4M3FN, 1000.0, false, Rounding::Nearest)
        )
        .is_nan());
        assert_eq!(
            decode(
                DType::F8E5M2,
                encode(DType::F8E5M2, 1e6, false, Rounding::Nearest)
            ),
            f64::INFINITY
        );
    }

    #[test]
    fn fp4_values() {
        let values: Vec<f64> = (0..8).map(|c| decode(DType::F4E2M1, c)).collect();
        assert_eq!(values, vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(encode(DType::F4E2M1, 2.5, true, Rounding::Nearest), 4);
        assert_eq!(encode(DType::F4E2M1, -7.0, true, Rounding::Nearest), 0xF);
    }
}
