"""faceweave.media"""
