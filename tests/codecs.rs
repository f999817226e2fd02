//! The number-format codecs against ml_dtypes, bit for bit: every code decoded, a sweep of
//! values (every tie and its neighbours included) encoded, and NVFP4/MXFP4 block quantization
//! against a numpy implementation of the two specs (`scripts/gen_codec_refs.py`).

use sparkc_ir::formats::{decode, encode, BlockFormat, BlockQuantized, Rounding};
use sparkc_ir::DType;
use sparkc_tests::generated_codecs;

fn load<T: npyz::Deserialize>(name: &str) -> (Vec<usize>, Vec<T>) {
    let path = generated_codecs().join(format!("{name}.npy"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("an npy file");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (
        shape,
        npy.into_vec().expect("npy data of the expected type"),
    )
}

const FORMATS: [DType; 5] = [
    DType::F8E4M3FN,
    DType::F8E5M2,
    DType::F8E4M3FNUZ,
    DType::F8E5M2FNUZ,
    DType::F4E2M1,
];

fn same_value(a: f64, b: f32) -> bool {
    (a.is_nan() && b.is_nan())
        || (a == f64::from(b) && a.is_sign_negative() == b.is_sign_negative())
}

#[test]
fn every_code_decodes_as_ml_dtypes_does() {
    for dtype in FORMATS.into_iter().chain([DType::F8E8M0]) {
        let (_, table) = load::<f32>(&format!("{dtype}_decode"));
        for (code, &want) in table.iter().enumerate() {
            let got = decode(dtype, code as u8);
            assert!(
                same_value(got, want),
                "{dtype} code {code:#04x}: {got} != {want}"
            );
        }
        println!("{dtype}: {} codes decode as ml_dtypes does", table.len());
    }
}

#[test]
fn encoding_matches_ml_dtypes_bit_for_bit() {
    for dtype in FORMATS {
        let (_, inputs) = load::<f32>(&format!("{dtype}_inputs"));
        let (_, codes) = load::<u8>(&format!("{dtype}_codes"));
        let (_, saturated) = load::<u8>(&format!("{dtype}_saturated"));
        for ((&x, &plain), &clipped) in inputs.iter().zip(&codes).zip(&saturated) {
            let got = encode(dtype, f64::from(x), false, Rounding::Nearest);
            assert_eq!(
                got, plain,
                "{dtype}: {x:e} encodes to {got:#04x}, ml_dtypes {plain:#04x}"
            );
            if !x.is_nan() {
                let got = encode(dtype, f64::from(x), true, Rounding::Nearest);
                assert_eq!(
                    got, clipped,
                    "{dtype} saturating: {x:e} encodes to {got:#04x}"
                );
            }
        }
        println!("{dtype}: {} values encode as ml_dtypes does", inputs.len());
    }
    let (_, inputs) = load::<f32>("f8e8m0_inputs");
    let (_, codes) = load::<u8>("f8e8m0_codes");
    for (&x, &want) in inputs.iter().zip(&codes) {
        let got = encode(DType::F8E8M0, f64::from(x), true, Rounding::Nearest);
        assert_eq!(
            got, want,
            "f8e8m0: {x:e} encodes to {got:#04x}, ml_dtypes {want:#04x}"
        );
    }
}

#[test]
fn block_formats_match_the_specs() {
    for format in [BlockFormat::Nvfp4, BlockFormat::Mxfp4] {
        for axis in [0, 1] {
            let stem = format!("{}_{axis}_", format.name());
            let (shape, input) = load::<f32>(&format!("{stem}input"));
            let (_, codes) = load::<u8>(&format!("{stem}codes"));
            let (scale_shape, scales) = load::<u8>(&format!("{stem}scales"));
            let (_, tensor_scale) = load::<f32>(&format!("{stem}tensor_scale"));
            let q = BlockQuantized::quantize(format, &input, &shape, axis).expect("quantizes");
            assert_eq!(q.scale_shape(), scale_shape, "{stem}");
            assert_eq!(
                q.tensor_scale.to_bits(),
                tensor_scale[0].to_bits(),
                "{stem}"
            );
            assert_eq!(q.scales, scales, "{stem}: block scales differ");
            let wrong = q.codes.iter().zip(&codes).filter(|(a, b)| a != b).count();
            assert_eq!(wrong, 0, "{stem}: {wrong} of {} codes differ", codes.len());
        }
    }
}
