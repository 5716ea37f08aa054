"""faceweave.pipeline"""
