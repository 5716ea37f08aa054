"""faceweave.ops"""
