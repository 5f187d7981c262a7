rule warp:
    """O2C canonical lip crops, mouth boxes, C2O grids, audio features -> HDF5 shards; QA."""
    input:
        frames="results/{subject}/resample/frames.mkv",
        meta="results/{subject}/resample/meta.json",
        audio="results/{subject}/resample/audio.wav",
        landmarks="results/{subject}/landmarks/landmarks.npz",
        geometry="results/{subject}/pose_depth/geometry.h5",
        code=module("warp"),
    output:
        index="results/{subject}/warp/index.json",
        shards=directory("results/{subject}/warp/shards"),
        summary="results/{subject}/warp/warp.json",
        strip="results/{subject}/warp/qa_strip.png",
        grid="results/{subject}/warp/qa_canonical_grid.png",
        roundtrip="results/{subject}/warp/qa_roundtrip.png",
    log:
        "logs/{subject}/warp.log",
    benchmark:
        "benchmarks/{subject}/warp.tsv"
    params:
        cfg=params_json("warp"),
        out_dir=subpath(output.index, parent=True),
    conda:
        "../envs/speech2lip.yaml"
    threads: 4
    resources:
        mem_mb=6000,
        runtime=120,
    shell:
        "python -m speech2lip warp --frames {input.frames:q} --meta {input.meta:q}"
        " --audio {input.audio:q} --landmarks {input.landmarks:q} --geometry {input.geometry:q}"
        " --out-dir {params.out_dir:q} --params {params.cfg:q}"
        " --threads {threads} > {log:q} 2>&1"
