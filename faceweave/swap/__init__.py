"""faceweave.swap"""
