rule pose_depth:
    """Canonical frame, per-frame face depth D_o, canonical full-head depth D_c, QA pictures."""
    input:
        frames="results/{subject}/resample/frames.mkv",
        meta="results/{subject}/resample/meta.json",
        landmarks="results/{subject}/landmarks/landmarks.npz",
        fit="results/{subject}/fit3dmm/fit.npz",
        code=module("pose_depth"),
    output:
        geometry="results/{subject}/pose_depth/geometry.h5",
        summary="results/{subject}/pose_depth/pose_depth.json",
        sheet="results/{subject}/pose_depth/qa_contact_sheet.png",
        depth="results/{subject}/pose_depth/qa_canonical_depth.png",
    log:
        "logs/{subject}/pose_depth.log",
    benchmark:
        "benchmarks/{subject}/pose_depth.tsv"
    params:
        cfg=params_json("pose_depth"),
        out_dir=subpath(output.geometry, parent=True),
    conda:
        "../envs/speech2lip.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "python -m speech2lip pose_depth --frames {input.frames:q} --meta {input.meta:q}"
        " --landmarks {input.landmarks:q} --fit {input.fit:q} --out-dir {params.out_dir:q}"
        " --params {params.cfg:q} --threads {threads}"
        " > {log:q} 2>&1"
