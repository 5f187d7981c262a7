rule fit3dmm:
    """Subject face model (no download), focal length, smoothed per-frame pose and expression."""
    input:
        landmarks="results/{subject}/landmarks/landmarks.npz",
        meta="results/{subject}/resample/meta.json",
        code=module("fit3dmm"),
    output:
        fit="results/{subject}/fit3dmm/fit.npz",
        summary="results/{subject}/fit3dmm/fit.json",
        qa="results/{subject}/fit3dmm/qa_pose.png",
    log:
        "logs/{subject}/fit3dmm.log",
    benchmark:
        "benchmarks/{subject}/fit3dmm.tsv"
    params:
        cfg=params_json("fit3dmm"),
        out_dir=subpath(output.fit, parent=True),
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
    shell:
        "python -m speech2lip fit3dmm --landmarks {input.landmarks:q} --meta {input.meta:q}"
        " --out-dir {params.out_dir:q}"
        " --params {params.cfg:q} > {log:q} 2>&1"
