rule landmarks:
    """Dense face landmarks for every frame (MediaPipe by default, offline)."""
    input:
        frames="results/{subject}/resample/frames.mkv",
        meta="results/{subject}/resample/meta.json",
        code=module("landmarks"),
    output:
        landmarks="results/{subject}/landmarks/landmarks.npz",
        summary="results/{subject}/landmarks/landmarks.json",
    log:
        "logs/{subject}/landmarks.log",
    benchmark:
        "benchmarks/{subject}/landmarks.tsv"
    params:
        cfg=params_json("landmarks"),
        out_dir=subpath(output.landmarks, parent=True),
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=120,
    shell:
        "python -m speech2lip landmarks --frames {input.frames:q} --meta {input.meta:q}"
        " --out-dir {params.out_dir:q}"
        " --params {params.cfg:q} > {log:q} 2>&1"
