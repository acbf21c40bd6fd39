//! Model zoo, parameter layout and initialisation.

use trainer::{
    BROWN_GPT, DIGITS_MLP, FASHION_CNN, LIPSUM_GPT, SMOLLM2_135M, Trainer, TrainerError, model_info, models,
};

const ZOO: [&str; 5] = [DIGITS_MLP, LIPSUM_GPT, FASHION_CNN, BROWN_GPT, SMOLLM2_135M];

#[test]
fn unknown_model_lists_known_names() {
    let err = Trainer::new("resnet-9000").expect_err("unknown model must fail");
    match &err {
        TrainerError::UnknownModel { name, known } => {
            assert_eq!(name, "resnet-9000");
            assert_eq!(known, &ZOO.map(String::from).to_vec());
        }
        other => panic!("wrong error: {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("digits-mlp") && msg.contains("lipsum-gpt"), "{msg}");
    assert!(matches!(model_info("nope"), Err(TrainerError::UnknownModel { .. })));
}

#[test]
fn zoo_counts_match_trainers() {
    let zoo = models();
    let names: Vec<&str> = zoo.iter().map(|m| m.name).collect();
    assert_eq!(names, ZOO);
    let empty = tempfile::tempdir().unwrap();
    for info in zoo {
        assert!(!info.description.is_empty());
        assert_eq!(model_info(info.name).unwrap(), info.clone());
        if trainer::model_packages(info.name) != Some(&[]) {
            // Its data is pulled: from an empty packages root it names the pull to run (the
            // pulled models are trained in the swarm package's tests/workloads.rs).
            let err = Trainer::open(info.name, empty.path()).expect_err("nothing pulled");
            assert!(matches!(err, TrainerError::NotPulled { .. }), "{err}");
            continue;
        }
        let t = Trainer::new(info.name).unwrap();
        assert_eq!(t.info(), info);
        assert_eq!(t.num_params(), info.params);
        assert_eq!(model_info(info.name).unwrap(), info);
        assert!(!info.description.is_empty());
    }
    // 64*64 + 64 + 64*10 + 10
    assert_eq!(model_info(DIGITS_MLP).unwrap().params, 4810);
    // lipsum-gpt, from its documented shape: V distinct characters,
    // context 64, width 64, 2 pre-LN blocks with a 4x MLP, a final LN and a
    // linear head (weights and biases).
    let v = {
        let mut c: Vec<char> = lipsum::LIBER_PRIMUS.chars().collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    };
    let (d, ctx, ff) = (64, 64, 256);
    let block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d);
    let expected = v * d + ctx * d + 2 * block + 2 * d + (d * v + v);
    assert_eq!(model_info(LIPSUM_GPT).unwrap().params, expected);
    assert_eq!(expected, 111_545, "the README's figure");
    // fashion-cnn: conv 1->16 and 16->32 (3x3, bias), dense 32*7*7 -> 128 -> 10.
    let fashion = (16 * 9 + 16) + (32 * 16 * 9 + 32) + (1568 * 128 + 128) + (128 * 10 + 10);
    assert_eq!(model_info(FASHION_CNN).unwrap().params, fashion);
    // brown-gpt: GPT-2's 50 257 tokens, context 256, width 192, 4 blocks, untied head.
    let (v, d, ctx, ff) = (50_257, 192, 256, 768);
    let block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d);
    assert_eq!(model_info(BROWN_GPT).unwrap().params, v * d + ctx * d + 4 * block + 2 * d + (d * v + v));
    // SmolLM2-135M: 30 llama blocks of width 576 (9 query, 3 key/value heads of 64), SwiGLU
    // 1536, RMSNorm weights, tied embedding of 49 152 tokens.
    let (v, d, kv, ff) = (49_152, 576, 192, 1536);
    let block = 2 * d + d * d + 2 * d * kv + d * d + 3 * d * ff;
    assert_eq!(model_info(SMOLLM2_135M).unwrap().params, v * d + 30 * block + d);
    assert_eq!(model_info(SMOLLM2_135M).unwrap().params, 134_515_008);
}

#[test]
fn layout_matches_param_count_and_names_are_unique() {
    for name in [DIGITS_MLP, LIPSUM_GPT] {
        let t = Trainer::new(name).unwrap();
        let layout = t.param_layout();
        let total: usize = layout.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(total, t.num_params(), "{name}");
        let mut names: Vec<&String> = layout.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), layout.len(), "{name}: duplicate names");
        assert!(layout.iter().all(|(n, s)| !n.is_empty() && !s.is_empty()));
    }
    let mlp = Trainer::new(DIGITS_MLP).unwrap().param_layout();
    let expect: Vec<(String, Vec<usize>)> = vec![
        ("fc1.weight".into(), vec![64, 64]),
        ("fc1.bias".into(), vec![64]),
        ("fc2.weight".into(), vec![64, 10]),
        ("fc2.bias".into(), vec![10]),
    ];
    assert_eq!(mlp, expect);
}

#[test]
fn init_params_is_deterministic_and_shaped() {
    for name in [DIGITS_MLP, LIPSUM_GPT] {
        let t = Trainer::new(name).unwrap();
        let a = t.init_params(7);
        let b = t.init_params(7);
        let c = t.init_params(8);
        assert_eq!(a.len(), t.num_params());
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_ne!(a, c);
        assert!(a.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        // Every tensor follows its rule: biases/beta zero, gamma one, weights non-constant.
        let mut off = 0;
        for (pname, shape) in t.param_layout() {
            let n: usize = shape.iter().product();
            let v = &a[off..off + n];
            off += n;
            if pname.ends_with("bias") || pname.ends_with("beta") {
                assert!(v.iter().all(|x| *x == 0.0), "{pname}");
            } else if pname.ends_with("gamma") {
                assert!(v.iter().all(|x| *x == 1.0), "{pname}");
            } else {
                assert!(v.iter().any(|x| *x != v[0]), "{pname}");
            }
        }
    }
}

#[test]
fn init_params_golden_hash() {
    // Pins our RNG and init rule: any change here changes every run's starting point.
    let t = Trainer::new(DIGITS_MLP).unwrap();
    let p = t.init_params(0);
    let hash = trainer::state_hash(&p, &[]);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_DIGITS_INIT_0, "init_params(0) changed");
}

const GOLDEN_DIGITS_INIT_0: &str = "a07b3696989e623107ff2e03952bceb772da0b2e0b02d8bdde27f10c8c3b6132";

#[test]
fn wrong_lengths_are_errors() {
    let t = Trainer::new(DIGITS_MLP).unwrap();
    let short = vec![0.0; t.num_params() - 1];
    let cfg = trainer::default_train_config(DIGITS_MLP);
    assert!(matches!(t.inner_loop(&short, &cfg, [0; 32], &mut |_, _| {}), Err(TrainerError::ParamLength { .. })));
    assert!(matches!(t.evaluate(&short), Err(TrainerError::ParamLength { .. })));
    let p = t.init_params(1);
    let bad = trainer::TrainConfig { inner_steps: 0, ..cfg };
    assert!(matches!(t.inner_loop(&p, &bad, [0; 32], &mut |_, _| {}), Err(TrainerError::InvalidConfig(_))));
}

#[test]
fn nan_parameters_give_an_error_not_garbage() {
    let t = Trainer::new(DIGITS_MLP).unwrap();
    let mut p = t.init_params(2);
    p[5] = f32::NAN;
    let cfg = trainer::default_train_config(DIGITS_MLP);
    assert!(matches!(
        t.inner_loop(&p, &cfg, [0; 32], &mut |_, _| {}),
        Err(TrainerError::NonFiniteLoss { step: 1, .. })
    ));
}
